import { metrics } from '@opentelemetry/api';
import { METER_NAME } from './instruments.ts';

/**
 * Figures of owner downloads streamed through the API (`GET /downloads/loras/<token>`): each
 * fetch by outcome, the bytes sent, and the downloads streaming now. The audit entry stays at
 * link creation (createLoraDownload); these count the fetches, which a link may have several of
 * (Range requests, resumed downloads). Labels: the outcome only.
 */

export const OwnerDownloadOutcome = {
  /** 200 with the whole file (`partial`: 206, one range). */
  FULL: 'full',
  PARTIAL: 'partial',
  HEAD: 'head',
  NOT_MODIFIED: 'not_modified',
  /** Forged, tampered, expired, or the LoRA deleted since: one answer (404). */
  NOT_FOUND: 'not_found',
  RANGE_NOT_SATISFIABLE: 'range_not_satisfiable',
  /** Over OWNER_DOWNLOADS_PER_USER / _PER_PROCESS (429). */
  BUSY: 'busy',
  /** The client went away before the last byte (storage read stopped). */
  ABORTED: 'aborted',
  /** Storage failed (before the headers: 502; after: the stream is cut). */
  FAILED: 'failed',
} as const;
export type OwnerDownloadOutcome = (typeof OwnerDownloadOutcome)[keyof typeof OwnerDownloadOutcome];

function make() {
  const meter = metrics.getMeterProvider().getMeter(METER_NAME);
  const made = {
    fetches: meter.createCounter('lora_vault.owner_downloads', { description: 'Owner download fetches through the API, by outcome' }),
    bytes: meter.createCounter('lora_vault.owner_download.bytes', { unit: 'By', description: 'Bytes of owner downloads sent' }),
    active: meter.createUpDownCounter('lora_vault.owner_downloads.active', { description: 'Owner downloads streaming now' }),
  };
  made.fetches.add(0, { outcome: OwnerDownloadOutcome.FULL });
  made.active.add(0);
  return made;
}

let cached: { provider: unknown; instruments: ReturnType<typeof make> } | null = null;

/** The instruments of the current meter provider (no-ops until the SDK started). */
export function ownerDownloadInstruments(): ReturnType<typeof make> {
  const provider = metrics.getMeterProvider();
  if (cached?.provider !== provider) cached = { provider, instruments: make() };
  return cached.instruments;
}
