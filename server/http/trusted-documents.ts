import { readFileSync } from 'node:fs';
import { GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import type { Principal } from '../auth/principal.ts';
import { RequestErrorCode } from '../domain/errors.ts';
import { principalOf } from './auth-plugin.ts';

/**
 * Trusted documents: the SDK's operations, hashed (sha256) when they are generated
 * (`sdk/gql/persisted-documents.json`). A request naming a known hash
 * (`extensions.persistedQuery.sha256Hash`, or `documentId`) runs the stored text, whatever text it
 * sent. With `only`, non-admins can run nothing else — a deployment then answers exactly the
 * operations its clients were built with.
 */

export interface TrustedDocuments {
  only: boolean;
  /** Resolves a request's operation: the stored text for a known hash; throws when refused. */
  resolve(
    params: { query?: string; extensions?: Record<string, unknown> | null; documentId?: string },
    principal: Principal,
  ): string | undefined;
}

export function loadTrustedDocuments(file: string, only: boolean): TrustedDocuments {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, string>;
  const store = new Map(Object.entries(raw).map(([hash, text]) => [hash.replace(/^sha256:/, ''), text]));
  return {
    only,
    resolve(params, principal) {
      const persisted = (params.extensions?.persistedQuery as { sha256Hash?: unknown } | undefined)?.sha256Hash;
      const hash = typeof persisted === 'string' ? persisted : params.documentId;
      if (hash) {
        const text = store.get(hash.replace(/^sha256:/, ''));
        if (!text) throw refusal('Unknown trusted document', RequestErrorCode.PERSISTED_QUERY_NOT_FOUND, 400);
        return text;
      }
      if (only && principal.role !== 'admin') {
        throw refusal(
          'This server runs trusted documents only: send the operation hash of an SDK document',
          RequestErrorCode.FORBIDDEN,
          403,
        );
      }
      return params.query;
    },
  };
}

function refusal(message: string, code: RequestErrorCode, status: number): GraphQLError {
  return new GraphQLError(message, { extensions: { code, http: { status } } });
}

export function useTrustedDocuments(documents: TrustedDocuments): Plugin {
  return {
    async onParams({ params, request, setParams }) {
      const principal = await principalOf(request);
      const query = documents.resolve(params as Parameters<TrustedDocuments['resolve']>[0], principal);
      if (query !== params.query) setParams({ ...params, query });
    },
  };
}
