import { z } from 'zod';
import { normaliseLoraId, normaliseSharedName } from './lora-refs.ts';

/** Fields the local interface's request bodies share (the /ensure family and the job routes). */

/** A value checked (and normalised) by `normalise`, or the issue `message`. */
const checked = (normalise: (v: unknown) => string | null, message: string) =>
  z.unknown().transform((v, ctx) => {
    const value = normalise(v);
    if (value === null) {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    }
    return value;
  });

export const loraIdField = checked(normaliseLoraId, 'a LoRA id (a positive integer)');
export const sharedNameField = checked(normaliseSharedName, 'a relative file name inside the shared library');
export const grantField = z.string().min(1).max(8192);
