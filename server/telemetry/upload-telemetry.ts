import { context, type Span, trace } from '@opentelemetry/api';
import type { LoraFormat } from '../domain/lora.ts';
import type { UploadPhase } from '../events/bus.ts';
import { serverInstruments } from './instruments.ts';
import { errorCode, failSpan, tracer } from './tracing.ts';

/**
 * One upload's trace and figures. The `lora.upload` span holds a child per phase — receive (bytes
 * arriving, validated and hashed as they come), validate (the full-file checks), commit (the block
 * list), finalize (the quota transaction, READY) — and `lora.upload.stage` alongside receive while
 * blocks go to storage. Attributes: bytes, format, outcome, error code. The phases follow the
 * progress the pipeline reports (`observe`), so the pipeline itself knows nothing about tracing.
 */

export type UploadSpanPhase = 'receive' | 'validate' | 'commit' | 'finalize';

const PHASE_OF: Partial<Record<UploadPhase, UploadSpanPhase>> = { RECEIVING: 'receive', VALIDATING: 'validate', STORING: 'commit' };

export class UploadTelemetry {
  private readonly span: Span;
  private readonly started = performance.now();
  private phaseSpan: Span | null = null;
  private phaseName: UploadSpanPhase | null = null;
  private stageSpan: Span | null = null;
  private bytes = 0;

  constructor() {
    this.span = tracer().startSpan('lora.upload');
  }

  /** Runs the upload with its span active (SQL and blob spans nest under it). */
  run<T>(fn: () => Promise<T>): Promise<T> {
    return context.with(trace.setSpan(context.active(), this.span), fn);
  }

  /** Wraps the progress reporter: each new phase ends the last phase span and starts its own. */
  observe<A extends unknown[]>(report: (phase: UploadPhase, bytes: number, ...rest: A) => void) {
    return (phase: UploadPhase, bytes: number, ...rest: A) => {
      this.bytes = Math.max(this.bytes, bytes);
      const name = PHASE_OF[phase];
      if (name) this.phase(name);
      report(phase, bytes, ...rest);
    };
  }

  phase(name: UploadSpanPhase): void {
    if (this.phaseName === name) return;
    this.endPhase();
    if (name === 'commit') this.endStage();
    this.phaseName = name;
    const parent = trace.setSpan(context.active(), this.span);
    this.phaseSpan = tracer().startSpan(`lora.upload.${name}`, {}, parent);
  }

  /** Blocks start going to storage (the format is known from the first bytes). */
  staging(format: LoraFormat): void {
    this.span.setAttribute('lora.format', format);
    const parent = trace.setSpan(context.active(), this.span);
    this.stageSpan ??= tracer().startSpan('lora.upload.stage', { attributes: { 'lora.format': format } }, parent);
  }

  succeeded(result: { sizeBytes: number; format: LoraFormat; quotaWarning: boolean }): void {
    const m = serverInstruments();
    m.uploads.add(1, { outcome: 'success' });
    m.uploadDuration.record(this.elapsed(), { outcome: 'success' });
    m.uploadSize.record(result.sizeBytes, { 'lora.format': result.format });
    m.uploadedBytes.add(result.sizeBytes, { 'lora.format': result.format });
    if (result.quotaWarning) m.quotaWarnings.add(1);
    this.bytes = result.sizeBytes;
    this.span.setAttributes({ 'lora.upload.outcome': 'success', 'lora.format': result.format });
    this.end();
  }

  failed(error: unknown): void {
    const code = errorCode(error);
    const m = serverInstruments();
    m.uploads.add(1, { outcome: 'failure', 'error.code': code });
    m.uploadDuration.record(this.elapsed(), { outcome: 'failure' });
    if (code === 'QUOTA_EXCEEDED') m.quotaRefusals.add(1);
    if (this.phaseSpan) failSpan(this.phaseSpan, error);
    failSpan(this.span, error);
    this.span.setAttribute('lora.upload.outcome', 'failure');
    this.end();
  }

  private elapsed(): number {
    return (performance.now() - this.started) / 1000;
  }

  private endPhase(): void {
    this.phaseSpan?.setAttribute('lora.upload.bytes', this.bytes);
    this.phaseSpan?.end();
    this.phaseSpan = null;
  }

  private endStage(): void {
    this.stageSpan?.setAttribute('lora.upload.bytes', this.bytes);
    this.stageSpan?.end();
    this.stageSpan = null;
  }

  private end(): void {
    this.endStage();
    this.endPhase();
    this.span.setAttribute('lora.upload.bytes', this.bytes);
    this.span.end();
  }
}

/** Traces and counts one upload: `fn` gets the telemetry to report phases to. */
export async function traceUpload<T extends { lora: { sizeBytes: number; format: LoraFormat }; quota: { warning: boolean } }>(
  fn: (telemetry: UploadTelemetry) => Promise<T>,
): Promise<T> {
  const telemetry = new UploadTelemetry();
  try {
    const result = await telemetry.run(() => fn(telemetry));
    telemetry.succeeded({ sizeBytes: result.lora.sizeBytes, format: result.lora.format, quotaWarning: result.quota.warning });
    return result;
  } catch (error) {
    telemetry.failed(error);
    throw error;
  }
}

/** A validation ahead of completion stopped (server/uploads/ahead-breaks.ts names the reasons). */
export function countAheadBreak(reason: string): void {
  serverInstruments().aheadBreaks.add(1, { reason });
}

/** A resumable upload's completion validated its file going on from the validation ahead, or reading it whole. */
export function countAheadCompletion(read: 'ahead' | 'full'): void {
  serverInstruments().aheadCompletions.add(1, { read });
}
