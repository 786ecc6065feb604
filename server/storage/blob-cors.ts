import { BlobServiceClient, type CorsRule } from '@azure/storage-blob';

/**
 * The Blob service's CORS rule that lets browsers PUT blocks through an upload session's SAS
 * (Studio's resumable uploads: the page's origin is the API's, storage's is another). Applied at
 * start-up from STORAGE_CORS_ORIGINS with Set Blob Service Properties (Azurite honours it as
 * Azure does). The rule is ours when its methods are exactly `PUT`: that one is replaced, the
 * account's other rules are kept; nothing is written when it is already as configured. A SAS
 * request carries no cookies or ambient credentials, so the rule widens nothing the SAS does
 * not already grant; it only lets a page read storage's answer.
 */
export const UPLOAD_CORS_RULE: Omit<CorsRule, 'allowedOrigins'> = {
  allowedMethods: 'PUT',
  // fetch sends content-type; the Azure SDK in a browser would add x-ms-* headers
  allowedHeaders: 'content-type,x-ms-*',
  exposedHeaders: 'etag,x-ms-request-id,x-ms-error-code',
  maxAgeInSeconds: 3600,
};

/** Sets (or replaces) the upload rule for `origins` (`*` or a list); an empty list removes it. */
export async function applyUploadCors(connectionString: string, origins: readonly string[]): Promise<'unchanged' | 'set'> {
  const service = BlobServiceClient.fromConnectionString(connectionString);
  const current = (await service.getProperties()).cors ?? [];
  const others = current.filter((rule) => !isUploadRule(rule));
  const wanted: CorsRule[] = origins.length ? [{ ...UPLOAD_CORS_RULE, allowedOrigins: origins.join(',') }] : [];
  const ours = current.filter(isUploadRule);
  if (ours.length === wanted.length && ours.every((rule, i) => sameRule(rule, wanted[i] as CorsRule))) return 'unchanged';
  await service.setProperties({ cors: [...others, ...wanted] });
  return 'set';
}

function isUploadRule(rule: CorsRule): boolean {
  return rule.allowedMethods.toUpperCase() === 'PUT';
}

function sameRule(a: CorsRule, b: CorsRule): boolean {
  return (
    a.allowedOrigins === b.allowedOrigins &&
    a.allowedHeaders === b.allowedHeaders &&
    a.exposedHeaders === b.exposedHeaders &&
    a.maxAgeInSeconds === b.maxAgeInSeconds
  );
}
