import type { IncomingMessage, ServerResponse } from 'node:http';
import { GraphQLError } from 'graphql';
import { processRequest } from 'graphql-upload-minimal';
import type { Plugin } from 'graphql-yoga';
import { RequestErrorCode } from '../domain/errors.ts';

/**
 * GraphQL multipart requests (the multipart request spec), parsed by graphql-upload-minimal as
 * a stream — Yoga's own multipart parsing buffers whole files and is turned off. One file per
 * request; `operations`/`map` fields ≤ 1 MB. The file limit given to the library is one byte over
 * ours: it truncates silently, so the upload pipeline counts bytes itself and refuses.
 */

export interface MultipartOptions {
  maxFileBytes: number;
  /** @default 1,000,000 */
  maxFieldBytes?: number;
}

interface NodeServerContext {
  req?: IncomingMessage;
  res?: ServerResponse;
}

export function isMultipart(contentType: string | null | undefined): boolean {
  return /^multipart\/form-data\s*;/i.test(contentType ?? '');
}

export function useStreamingUploads(options: MultipartOptions): Plugin<Record<string, never>, NodeServerContext> {
  return {
    onRequestParse({ request, serverContext, setRequestParser }) {
      if (!isMultipart(request.headers.get('content-type'))) return;
      const { req, res } = serverContext;
      if (!req || !res) throw new Error('streaming uploads need the node:http request');
      setRequestParser(async () => {
        try {
          const operations = await processRequest(req, res, {
            maxFiles: 1,
            maxFieldSize: options.maxFieldBytes ?? 1_000_000,
            maxFileSize: options.maxFileBytes + 1,
          });
          if (Array.isArray(operations)) throw httpError(400, 'Batched multipart requests are not supported');
          return operations as { query: string; variables?: Record<string, unknown>; operationName?: string };
        } catch (error) {
          if (error instanceof GraphQLError) throw error;
          const status = (error as { status?: number }).status;
          throw httpError(status && status >= 400 && status < 500 ? status : 400, (error as Error).message);
        }
      });
    },
  };
}

function httpError(status: number, message: string): GraphQLError {
  return new GraphQLError(message, { extensions: { code: RequestErrorCode.BAD_USER_INPUT, http: { status } } });
}
