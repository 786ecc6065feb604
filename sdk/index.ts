/**
 * @lora-vault/sdk — skeleton. The typed client (generated documents, `createLoraClient`) is built
 * by the SDK issue; this package already stands alone (no server dependencies).
 */
export const GRAPHQL_PATH = '/graphql';
