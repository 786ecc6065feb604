import { readFile, writeFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * What the embedded services need to recognise their own processes after a crash: a record of
 * which process started which (written next to the service's data), and /proc facts to tell a
 * live owner from a dead one and a recorded process from an unrelated one that reused its pid.
 */

/** A process, told apart from a later one with the same pid by its start time. */
export interface ProcessRef {
  pid: number;
  startTime: number | undefined;
}

/** The record written when a service starts: who started it (`owner`), and its process (`child`). */
export interface OwnerRecord {
  owner: ProcessRef;
  child?: ProcessRef;
}

/** From /proc/<pid>/stat: the command name, parent pid and start time (clock ticks after boot). */
export async function procStat(pid: number): Promise<{ comm: string; ppid: number; startTime: number } | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // "<pid> (<comm>) <state> <ppid> … <starttime: field 22> …"; comm may hold spaces and ')'
  const close = stat.lastIndexOf(')');
  const rest = stat.slice(close + 2).split(' ');
  return { comm: stat.slice(stat.indexOf('(') + 1, close), ppid: Number(rest[1]), startTime: Number(rest[19]) };
}

/** Whether the process exists and is not a zombie (an exited orphan its new parent has not reaped yet). */
export async function isRunning(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if (!isErrno(err, 'EPERM')) return false; // EPERM: exists, owned by another user
  }
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // "<pid> (<comm>) <state> ...": the state follows the last ')'
  return stat === undefined || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
}

/** Whether `ref` still runs: same pid, same start time, not a zombie. */
export async function isSameRunning(ref: ProcessRef): Promise<boolean> {
  return (await procStat(ref.pid))?.startTime === ref.startTime && (await isRunning(ref.pid));
}

async function processRef(pid: number): Promise<ProcessRef> {
  return { pid, startTime: (await procStat(pid))?.startTime };
}

/** Records this process as the owner of `childPid` (if given) in `file`. */
export async function writeOwnerRecord(file: string, childPid?: number): Promise<void> {
  const record: OwnerRecord = { owner: await processRef(process.pid), ...(childPid ? { child: await processRef(childPid) } : {}) };
  await writeFile(file, JSON.stringify(record));
}

export async function readOwnerRecord(file: string): Promise<OwnerRecord | undefined> {
  try {
    const record = JSON.parse(await readFile(file, 'utf8')) as Partial<OwnerRecord>;
    return typeof record.owner?.pid === 'number' ? (record as OwnerRecord) : undefined;
  } catch {
    return undefined; // none, or unreadable: nothing recorded
  }
}

/** Sends each signal in turn and polls (the process need not be our child) until it is gone. */
export async function stopProcess(pid: number, steps: readonly (readonly [NodeJS.Signals, number])[]): Promise<boolean> {
  for (const [signal, waitMs] of steps) {
    try {
      process.kill(pid, signal);
    } catch {
      return true; // already gone
    }
    const until = Date.now() + waitMs;
    while (Date.now() < until) {
      if (!(await isRunning(pid))) return true;
      await sleep(50);
    }
  }
  return !(await isRunning(pid));
}

/** Whether `err` is a Node system error with this `code` (ENOENT, EPERM, …). */
export function isErrno(err: unknown, code: string): boolean {
  return err instanceof Error && 'code' in err && err.code === code;
}
