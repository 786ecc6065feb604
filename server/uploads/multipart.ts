import type { IncomingMessage } from 'node:http';
import { type DocumentNode, Kind, type OperationDefinitionNode, type TypeNode } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { badRequest, MappedUpload, parseMultipart } from './multipart-parser.ts';

/**
 * GraphQL multipart requests, parsed as a stream (multipart-parser.ts) — Yoga's own multipart
 * parsing buffers whole files and is turned off. One file per request; `operations`/`map` fields
 * ≤ 1 MB. The file limit given to busboy is one byte over ours: it truncates silently, so the
 * upload pipeline counts bytes itself and refuses.
 *
 * Before execution, every uploaded file must be the value of a variable the operation declares
 * as `Upload`: a file mapped onto a `String` variable (or a variable the operation does not
 * declare) is a 400 that names the variable, rather than a coercion error printing the upload.
 */

export interface MultipartOptions {
  maxFileBytes: number;
  /** @default 1,000,000 */
  maxFieldBytes?: number;
  /** No byte of the body for this long → the upload ends UPLOAD_INTERRUPTED and the socket closes. */
  idleMs: number;
}

interface NodeServerContext {
  req?: IncomingMessage;
}

export function isMultipart(contentType: string | null | undefined): boolean {
  return /^multipart\/form-data\s*;/i.test(contentType ?? '');
}

/** The variables of multipart requests (the only ones that can hold an uploaded file). */
const parsedVariables = new WeakSet<object>();

export function useStreamingUploads(options: MultipartOptions): Plugin<Record<string, never>, NodeServerContext> {
  return {
    onRequestParse({ request, serverContext, setRequestParser }) {
      if (!isMultipart(request.headers.get('content-type'))) return;
      const { req } = serverContext;
      if (!req) throw new Error('streaming uploads need the node:http request');
      setRequestParser(async () => {
        const params = await parseMultipart(req, options);
        if (params.variables) parsedVariables.add(params.variables);
        return params;
      });
    },
    onExecute({ args }) {
      const variables = args.variableValues;
      if (!variables || !parsedVariables.has(variables)) return;
      for (const [name, value] of Object.entries(variables)) {
        const upload = findUpload(value);
        if (!upload) continue;
        const declared = variableType(args.document, args.operationName, name);
        if (declared && getNamedTypeName(declared) === 'Upload') continue;
        throw badRequest(
          declared
            ? `Variable "$${name}" is a ${printType(declared)}, but the uploaded file "${upload.part}" was mapped to it; files go only to Upload variables`
            : `The uploaded file "${upload.part}" was mapped to "$${name}", which the operation does not declare`,
        );
      }
    },
  };
}

function findUpload(value: unknown, depth = 0): MappedUpload | undefined {
  if (value instanceof MappedUpload) return value;
  if (depth > 32 || typeof value !== 'object' || value === null) return undefined;
  for (const item of Object.values(value)) {
    const found = findUpload(item, depth + 1);
    if (found) return found;
  }
  return undefined;
}

function variableType(document: DocumentNode, operationName: string | null | undefined, name: string): TypeNode | undefined {
  const operation = document.definitions.find(
    (d): d is OperationDefinitionNode => d.kind === Kind.OPERATION_DEFINITION && (!operationName || d.name?.value === operationName),
  );
  return operation?.variableDefinitions?.find((v) => v.variable.name.value === name)?.type;
}

function getNamedTypeName(type: TypeNode): string {
  return type.kind === Kind.NAMED_TYPE ? type.name.value : getNamedTypeName(type.type);
}

function printType(type: TypeNode): string {
  if (type.kind === Kind.NAMED_TYPE) return type.name.value;
  return type.kind === Kind.LIST_TYPE ? `[${printType(type.type)}]` : `${printType(type.type)}!`;
}
