import { LoraSdkError } from '@lora-vault/sdk';
import { AgentError } from './errors.ts';

/** The API's answer (through the SDK) as the agent's own typed error. */
export function fromSdkError(error: unknown, what: string): AgentError {
  if (error instanceof AgentError) return error;
  if (!(error instanceof LoraSdkError)) {
    return new AgentError('API_UNAVAILABLE', `asking the API about ${what} failed: ${(error as Error)?.message ?? String(error)}`, {
      retryable: true,
      cause: error,
    });
  }
  switch (error.code) {
    case 'LORA_NOT_FOUND':
      return new AgentError('LORA_NOT_FOUND', `${what} not found`, { cause: error });
    case 'INVALID_GRANT':
      return new AgentError('INVALID_GRANT', `the job grant was refused: ${error.message}`, { cause: error });
    case 'VALIDATION_FAILED':
    case 'BAD_USER_INPUT':
      return new AgentError('INVALID_REQUEST', `the API refused the request for ${what}: ${error.message}`, { cause: error });
    case 'UNAUTHENTICATED':
    case 'FORBIDDEN':
      return new AgentError('API_UNAVAILABLE', `the API refused the agent's machine token (${error.code}): check LORA_VAULT_TOKEN`, {
        cause: error,
      });
    default:
      return new AgentError('API_UNAVAILABLE', `asking the API about ${what} failed (${error.code}): ${error.message}`, {
        retryable: error.retryable || error.kind === 'network',
        cause: error,
      });
  }
}
