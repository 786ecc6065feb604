import { type Logger, pino } from 'pino';

/** One JSON line pino wrote: its level (30 info, 40 warn, 50 error), message and fields. */
export interface LogLine {
  level: number;
  msg?: string;
  err?: unknown;
  [field: string]: unknown;
}

/** A real pino logger (from `level` up) whose lines the test reads back, parsed. */
export function capturingLogger(level: pino.LevelWithSilent = 'info'): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const logger = pino(
    { level },
    {
      write(chunk: string) {
        for (const line of chunk.split('\n')) if (line.trim()) lines.push(JSON.parse(line) as LogLine);
      },
    },
  );
  return { logger, lines };
}
