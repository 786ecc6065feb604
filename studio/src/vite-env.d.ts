/// <reference types="vite/client" />

interface ImportMetaEnv {
  /** The API's GraphQL URL when Studio is hosted away from the API (default: this origin's /graphql). */
  readonly VITE_LORA_VAULT_URL?: string;
}
