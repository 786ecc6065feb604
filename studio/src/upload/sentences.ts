import type { BeginLoraUploadMutation, CompleteLoraUploadMutation, UploadLoraMutation } from '@lora-vault/sdk/documents';
import type { LoraSdkError } from '@lora-vault/sdk/errors';
import { formatBytes } from '../shared/format.ts';

/**
 * The upload's typed outcomes as sentences a person understands: what happened to which file,
 * with the numbers (quota, limit) and the reason (format, unsafe findings) the API returned.
 */

/** A typed refusal of the upload: the multipart mutation's, a session's begin or its completion. */
export type UploadError =
  | Exclude<UploadLoraMutation['uploadLora'], { __typename: 'UploadLoraSuccess' }>
  | Exclude<CompleteLoraUploadMutation['completeLoraUpload'], { __typename: 'UploadLoraSuccess' }>
  | Exclude<BeginLoraUploadMutation['beginLoraUpload'], { __typename: 'LoraUploadSession' }>;

export interface QuotaNumbers {
  usedBytes: number;
  maxBytes: number;
  availableBytes: number;
  count: number;
  maxCount: number;
}

export function quotaSentence(fileName: string, fileBytes: number, q: QuotaNumbers): string {
  if (q.count >= q.maxCount) {
    return `“${fileName}” was not uploaded: you already have ${q.count} of ${q.maxCount} LoRAs. Delete one to make room.`;
  }
  return (
    `“${fileName}” (${formatBytes(fileBytes)}) does not fit: you use ${formatBytes(q.usedBytes)} of ${formatBytes(q.maxBytes)}, ` +
    `so only ${formatBytes(q.availableBytes)} is free. Delete a LoRA to make room.`
  );
}

export function uploadErrorSentence(fileName: string, fileBytes: number, error: UploadError): string {
  switch (error.__typename) {
    case 'QuotaExceededError':
      return quotaSentence(fileName, fileBytes, {
        usedBytes: error.currentUsageBytes,
        maxBytes: error.maxQuotaBytes,
        availableBytes: error.availableBytes,
        count: error.currentCount,
        maxCount: error.maxCount,
      });
    case 'InvalidFileError':
      return `“${fileName}” is not a LoRA file Studio can store (it looks like ${describeFormat(error.detectedFormat)}): ${error.reason}.`;
    case 'UnsafeFileError': {
      const findings = error.findings.map((f) => `${f.detail}${f.location ? ` (${f.location})` : ''}`).join('; ');
      return `“${fileName}” was refused because loading it could run code on the GPU machines: it calls ${findings}. Save the LoRA as .safetensors and upload that instead.`;
    }
    case 'FileTooLargeError':
      return `“${fileName}” (${formatBytes(fileBytes)}) is larger than the ${formatBytes(error.maxBytes)} allowed for one LoRA.`;
    case 'UploadInterruptedError':
      return `The upload of “${fileName}” stopped before the whole file arrived. Nothing was stored; try again.`;
    case 'TooManyUploadsError':
      return `Too many uploads are running at once (at most ${error.limit}); “${fileName}” was not sent. Try again when one has finished.`;
    case 'ValidationError':
      return `“${fileName}” was not uploaded: ${error.issues.map((i) => `${i.path}: ${i.message}`).join('; ')}.`;
    default:
      return `“${fileName}” was not uploaded: ${(error as { message: string }).message}`;
  }
}

function describeFormat(detected: string): string {
  const names: Record<string, string> = {
    safetensors: 'a damaged safetensors file',
    'pt-zip': 'a damaged PyTorch file',
    'pt-pickle': 'a damaged PyTorch file',
    png: 'a PNG image',
    jpeg: 'a JPEG image',
    empty: 'an empty file',
    unknown: 'an unknown kind of file',
  };
  return names[detected] ?? `a ${detected} file`;
}

/** A thrown GraphQL or network failure of the upload request, as a sentence. */
export function requestErrorSentence(fileName: string, error: LoraSdkError): string {
  if (error.code === 'ABORTED') return `The upload of “${fileName}” was cancelled. Nothing was stored.`;
  if (error.code === 'UNAUTHENTICATED') return 'Your sign-in has expired. Sign in again and retry the upload.';
  if (error.code === 'RATE_LIMITED') return `Too many requests just now; “${fileName}” was not sent. Try again in a moment.`;
  if (error.kind === 'network') return `The upload of “${fileName}” failed because the connection to the server broke. Try again.`;
  return `“${fileName}” was not uploaded: ${error.message}`;
}
