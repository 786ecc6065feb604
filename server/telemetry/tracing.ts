import { type Attributes, type Span, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';

/**
 * Spans of our own code (upload phases, jobs, events). The tracer is the API's proxy: it works
 * before the SDK starts and records nothing when no exporter is configured. Attributes carry ids,
 * sizes, formats and codes only — never a token, a grant, a SAS URL or a file's contents.
 */

export const TRACER_NAME = 'lora-vault';

export const tracer = () => trace.getTracer(TRACER_NAME);

/** Runs `fn` in a new active span; a throw marks it as an error (with the error's code, not its message). */
export async function inSpan<T>(
  name: string,
  options: { attributes?: Attributes; kind?: SpanKind },
  fn: (span: Span) => Promise<T>,
): Promise<T> {
  return tracer().startActiveSpan(name, { kind: options.kind ?? SpanKind.INTERNAL, attributes: options.attributes ?? {} }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      failSpan(span, error);
      throw error;
    } finally {
      span.end();
    }
  });
}

/** Marks a span failed with the error's code (`error.type`); messages may quote input, so none is recorded. */
export function failSpan(span: Span, error: unknown): void {
  const code = errorCode(error);
  span.setAttribute('error.type', code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: code });
}

/** The error's code from the one enum (domain or request errors), else its class name. */
export function errorCode(error: unknown): string {
  const code = (error as { code?: unknown })?.code ?? (error as { extensions?: { code?: unknown } })?.extensions?.code;
  if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(code)) return code;
  return 'INTERNAL_SERVER_ERROR';
}
