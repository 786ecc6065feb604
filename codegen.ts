import type { CodegenConfig } from '@graphql-codegen/cli';

/**
 * The SDK's typed documents: `sdk/operations/*.graphql` (one file per area) against the committed
 * contract, into `sdk/gql/` (committed; `npm run codegen:check` fails when it is stale), with the
 * sha256 hash of every document for trusted-documents deployments (`sdk/gql/persisted-documents.json`).
 */
const config: CodegenConfig = {
  schema: 'schema/schema.graphql',
  documents: ['sdk/operations/*.graphql'],
  ignoreNoDocuments: false,
  emitLegacyCommonJSImports: false,
  generates: {
    'sdk/gql/': {
      preset: 'client',
      presetConfig: {
        // The SDK hands out whole result types; fragments are for reuse, not for masking.
        fragmentMasking: false,
        persistedDocuments: { hashAlgorithm: 'sha256' },
      },
      config: {
        useTypeImports: true,
        enumsAsTypes: true,
        skipTypename: false,
        dedupeFragments: true,
        scalars: {
          Bytes: 'number',
          DateTime: 'string',
          JSON: 'unknown',
          Upload: 'Blob',
        },
      },
    },
  },
};

export default config;
