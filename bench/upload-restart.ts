/**
 * `npm run bench:upload:restart [MiB]` — issue 17's "Done when", done for real: a 2 GiB resumable
 * upload survives a cut network AND a crashed client, finishes without resending what storage
 * holds, and is validated exactly like a multipart upload.
 *
 * 1. A valid safetensors LoRA of the given size (default 2048 MiB = MAX_UPLOAD_BYTES) written to the
 *    temp dir, its sha256 and AutoV3 (sha256 of the data after the header) computed on the way.
 * 2. Embedded PostgreSQL + Azurite, the real app in a child process (bench/upload-server.ts), its
 *    upload SAS short-lived (BENCH_SAS_TTL, default 60 s) so that it expires and is renewed during
 *    the upload.
 * 3. test/testkit/restart-sequence.ts: the SDK's Node uploadLoraResumable in a CHILD process (state
 *    file beside the upload), its traffic to storage and to the API through TCP proxies this process
 *    controls. At 30 % of the file toward storage both proxies drop every connection and refuse new
 *    ones for BENCH_OUTAGE_MS (default 8000: longer than six tries' backoff); at 60 % the client is
 *    SIGKILLed; a NEW process on the same file resumes from the state file and loraUploadSession.
 * 4. Checks: bytes toward storage ÷ file size ≤ 1.1; the restarted process sent exactly the blocks
 *    storage lacked (its stats against loraUploadSession's list after the kill); one session,
 *    COMPLETED; the LoRA READY with the file's size, sha256, AutoV2, AutoV3; the same file through
 *    multipart `uploadLora` (another user) gives the same format, hashes and metadata (base model,
 *    rank, alpha, raw header metadata…); both LoRAs name one blob (identical content stored once);
 *    no staging or other leftover blob; the quota counts the file once and no reservation is left.
 * Blocks: 256 whatever the size (UPLOAD_BLOCK_BYTES = size / 256 within 256 KiB … 8 MiB; BENCH_BLOCK_BYTES overrides).
 * Prints `RESULT: PASS/FAIL — …`; exit 0 on PASS. Everything is stopped and deleted on every exit
 * path. Knobs: the size as the first argument or BENCH_RESTART_MB (64 … 2048), BENCH_OUTAGE_MS,
 * BENCH_SAS_TTL (seconds), BENCH_CONCURRENCY (blocks in flight, default 4), BENCH_KEEP=1.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { createLoraClient, type LoraDetails } from '../sdk/index.ts';
import { signToken } from '../server/auth/tokens.ts';
import { BlobStore } from '../server/storage/blob-store.ts';
import { type RestartSequenceResult, runCutKillRestart } from '../test/testkit/restart-sequence.ts';
import { type BenchFile, deleteAllBlobs, writeSafetensorsFile } from './files.ts';
import {
  benchTempDir,
  log,
  onCleanup,
  runBench,
  runtimeConfig,
  serverChildEnv,
  startServerChild,
  startServices,
  timed,
} from './harness.ts';
import { RESUMABLE_MAX_RESENT } from './upload-resumable.ts';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const SIZE_MIB = Number(process.argv[2] ?? process.env.BENCH_RESTART_MB ?? '2048');
const OUTAGE_MS = Number(process.env.BENCH_OUTAGE_MS ?? '8000');
const SAS_TTL_SECONDS = Number(process.env.BENCH_SAS_TTL ?? '60');
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? '4');
/** 256 blocks whatever the size (8 MiB, the server's default, at 2 GiB; its minimum 256 KiB at 64 MiB): the cut and the kill cost the same share. */
const BLOCK_BYTES = Number(
  process.env.BENCH_BLOCK_BYTES ?? Math.min(8 * 1024 * 1024, Math.max(256 * 1024, (SIZE_MIB * 1024 * 1024) / 256)),
);
const JWT_SECRET = 'bench-secret-bench-secret-bench-secret-0123456789';

if (!Number.isInteger(SIZE_MIB) || SIZE_MIB < 64 || SIZE_MIB > 2048) {
  console.error('the size (first argument or BENCH_RESTART_MB) must be an integer number of MiB between 64 and 2048');
  process.exit(2);
}
for (const [name, value] of [
  ['BENCH_OUTAGE_MS', OUTAGE_MS],
  ['BENCH_SAS_TTL', SAS_TTL_SECONDS],
  ['BENCH_CONCURRENCY', CONCURRENCY],
  ['BENCH_BLOCK_BYTES', BLOCK_BYTES],
] as const) {
  if (!Number.isInteger(value) || value < 1) {
    console.error(`${name} must be a positive integer`);
    process.exit(2);
  }
}

/** sha256 of the file's data section (after the 8-byte length and the JSON header): Civitai AutoV3. */
async function dataSha256(path: string): Promise<string> {
  const handle = await open(path, 'r');
  const prefix = Buffer.alloc(8);
  await handle.read(prefix, 0, 8, 0);
  await handle.close();
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path, { start: 8 + Number(prefix.readBigUInt64LE()), highWaterMark: 4 * MiB }))
    hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** What "validated like multipart" compares: every field the pipeline derives from the bytes. */
function derived(lora: LoraDetails) {
  return {
    format: lora.format,
    sizeBytes: lora.sizeBytes,
    sha256: lora.sha256,
    autoV2: lora.autoV2,
    autoV3: lora.autoV3,
    metadata: lora.metadata,
  };
}

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

async function main(): Promise<number> {
  const size = SIZE_MIB * MiB;
  log(
    `resumable upload restart demonstration: ${SIZE_MIB} MiB in ${BLOCK_BYTES / 1024} KiB blocks, network cut ${OUTAGE_MS} ms at 30 %, client SIGKILLed at 60 %, SAS TTL ${SAS_TTL_SECONDS} s`,
  );
  // the file, the staged blocks and the committed base, the multipart upload's staging copy (Azurite frees space only in its GC), margin
  const needBytes = 4 * size + 512 * MiB;
  const fsStats = await statfs(tmpdir());
  const freeBytes = fsStats.bavail * fsStats.bsize;
  if (freeBytes < needBytes) {
    console.error(
      `not enough free disk in ${tmpdir()}: ${(freeBytes / 1e9).toFixed(1)} GB free, ${(needBytes / 1e9).toFixed(1)} GB needed`,
    );
    return 1;
  }
  const dir = await benchTempDir();
  const [file] = await timed(`wrote ${SIZE_MIB} MiB of safetensors`, () => writeSafetensorsFile(join(dir, 'restart.safetensors'), size));
  const [autoV3Full] = await timed('hashed its data section (AutoV3)', () => dataSha256(file.path));
  log(`sha256 ${file.sha256}, AutoV3 ${autoV3Full.slice(0, 12)}…`);

  const [{ pgHandle, azurite }] = await timed('started embedded PostgreSQL + Azurite', () => startServices());
  const env = serverChildEnv(dir, { pgHandle, azurite }, JWT_SECRET, {
    QUOTA_DEFAULT_MAX_BYTES: String(64 * GiB),
    UPLOAD_SAS_TTL_SECONDS: String(SAS_TTL_SECONDS),
    UPLOAD_BLOCK_BYTES: String(BLOCK_BYTES),
    JOBS_ENABLED: 'true', // the content-deletion job removes the multipart upload's own blob once it is linked to the stored content
  });
  const config = runtimeConfig(env);
  const store = new BlobStore({
    connectionString: azurite.connectionString,
    loraContainer: config.storage.loraContainer,
    sharedContainer: config.storage.sharedContainer,
    sharedPrefix: config.storage.sharedPrefix,
  });
  onCleanup('blob deletion', () => deleteAllBlobs(store));
  const [server] = await timed('upload server started (child process)', () => startServerChild(env));
  const graphqlUrl = `${server.url}/graphql`;
  const db = new pg.Pool({ connectionString: config.databaseUrl, max: 2 });
  onCleanup('bench database pool', () => db.end());
  const storagePort = Number(/BlobEndpoint=http:\/\/127\.0\.0\.1:(\d+)/.exec(azurite.connectionString)?.[1]);

  const userA = randomUUID();
  const tokenA = await signToken(JWT_SECRET, { role: 'user', sub: userA });
  const [run] = await timed('cut + kill + restart sequence', () =>
    runCutKillRestart({
      graphqlUrl,
      token: tokenA,
      path: file.path,
      storage: { host: '127.0.0.1', port: storagePort },
      outageMs: OUTAGE_MS,
      concurrency: CONCURRENCY,
      name: 'restart-2g',
      log,
    }).catch((error: Error) => {
      console.log(`\nRESULT: FAIL — ${SIZE_MIB} MiB: the sequence did not run through: ${error.message.slice(0, 2000)}`);
      return undefined;
    }),
  );
  if (!run) return 1;
  const checks: { what: string; ok: boolean; detail: string }[] = [];
  const check = (what: string, ok: boolean, detail: string) => {
    checks.push({ what, ok, detail });
    log(`${ok ? 'ok  ' : 'FAIL'} ${what}: ${detail}`);
  };
  const result = run.restarted.result;
  check(
    'restarted client',
    run.restarted.code === 0 && !!result,
    result ? `completed in ${s(result.ms)}` : `exit ${run.restarted.code}: ${run.restarted.stderr.slice(-1500)}`,
  );
  if (!result) return report(file, run, checks);

  const ratio = run.bytesToStorage / size;
  check('bytes toward storage ÷ file size', ratio <= RESUMABLE_MAX_RESENT, `${ratio.toFixed(3)} (target ≤ ${RESUMABLE_MAX_RESENT})`);
  check(
    'the network cut was ridden out',
    run.refusedDuringOutage > 0 && run.acceptedAfterOutage > 0,
    `${run.refusedDuringOutage} connections refused during the outage, ${run.acceptedAfterOutage} accepted after it`,
  );
  const held = run.heldAtRestart.length;
  const { blocksSent, blocksResumed } = result.stats;
  // A Put Block whose body had all arrived when the client died may land after loraUploadSession was asked: it counts as held.
  // A block storage dropped at the instant of a validation-ahead commit is staged again (THREATS row 81): at most 2.
  const restaged = blocksSent + blocksResumed - run.blockCount;
  check(
    'the restarted process sent only what storage lacked',
    blocksResumed >= held && restaged >= 0 && restaged <= 2,
    `storage held ${held}/${run.blockCount} blocks after the kill; the new process skipped ${blocksResumed}, sent ${blocksSent} (${(result.stats.bytesSent / MiB).toFixed(0)} MiB${restaged > 0 ? `; ${restaged} staged again after a validation-ahead commit dropped it` : ''})`,
  );
  check('state file removed', !run.stateFileLeft, run.stateFileLeft ? 'still there' : 'gone');

  const sessions = await db.query<{ id: string; state: string }>('SELECT id, state FROM upload_session WHERE user_id = $1', [userA]);
  check(
    'one session, resumed and COMPLETED',
    sessions.rows.length === 1 && sessions.rows[0]?.state === 'COMPLETED' && sessions.rows[0]?.id === run.sessionId,
    JSON.stringify(sessions.rows),
  );

  const clientA = createLoraClient({ url: graphqlUrl, token: tokenA, timeoutMs: 600_000 });
  onCleanup('client A', () => clientA.close());
  const loraA = await clientA.getLora({ id: result.loraId });
  const expected = { sizeBytes: size, sha256: file.sha256, autoV2: file.sha256.slice(0, 10) };
  check(
    'LoRA READY with the file’s size, sha256, AutoV2, AutoV3',
    loraA.status === 'READY' &&
      Number(loraA.sizeBytes) === size &&
      loraA.sha256 === expected.sha256 &&
      loraA.autoV2.toLowerCase() === expected.autoV2 &&
      !!loraA.autoV3 &&
      loraA.autoV3.length >= 10 &&
      autoV3Full.startsWith(loraA.autoV3.toLowerCase()),
    `${loraA.status}, ${loraA.sizeBytes} bytes, sha256 ${loraA.sha256.slice(0, 12)}…, AutoV2 ${loraA.autoV2}, AutoV3 ${loraA.autoV3}`,
  );

  // The same file through multipart uploadLora, as another user: the pipeline must derive the same.
  const userB = randomUUID();
  const clientB = createLoraClient({
    url: graphqlUrl,
    token: await signToken(JWT_SECRET, { role: 'user', sub: userB }),
    timeoutMs: 600_000,
  });
  onCleanup('client B', () => clientB.close());
  const [multipart, multipartMs] = await timed('the same file through multipart uploadLora (another user)', () =>
    clientB.uploadLora({ file: { path: file.path }, name: 'restart-2g-multipart' }),
  );
  const loraB = await clientB.getLora({ id: multipart.lora.id });
  const a = JSON.stringify(derived(loraA));
  const b = JSON.stringify(derived(loraB));
  check(
    'validated like multipart',
    a === b && loraB.status === 'READY',
    a === b
      ? `format ${loraA.format}, base model ${loraA.metadata.baseModel} (${loraA.metadata.baseModelSource}), rank ${loraA.metadata.rank}, alpha ${loraA.metadata.alpha}, ${loraA.metadata.tensorCount} tensors — identical (multipart took ${s(multipartMs)})`
      : `resumable ${a.slice(0, 600)}\n  multipart ${b.slice(0, 600)}`,
  );

  const rows = await db.query<{ user_id: string; blob_path: string }>(
    'SELECT user_id::text, blob_path FROM lora WHERE file_id = ANY($1::bigint[])',
    [[result.loraId, multipart.lora.id]],
  );
  const paths = new Set(rows.rows.map((r) => r.blob_path));
  const [onlyPath] = paths;
  const ref = onlyPath
    ? await db.query<{ ref_count: number }>('SELECT ref_count FROM lora_blob WHERE blob_path = $1', [onlyPath])
    : undefined;
  check(
    'identical content stored once',
    paths.size === 1 && ref?.rows[0]?.ref_count === 2,
    `${paths.size} blob path(s) for the two LoRAs, ref_count ${ref?.rows[0]?.ref_count}`,
  );

  // The multipart upload's own blob goes by the content-deletion job (durable, asynchronous): wait for it, at most 60 s.
  let blobs: string[] = [];
  let leftovers: string[] = [];
  for (const t0 = performance.now(); performance.now() - t0 < 60_000; await sleep(500)) {
    blobs = [];
    for await (const b of store.clientsForTests().loras.listBlobsFlat({ includeUncommitedBlobs: true })) blobs.push(b.name);
    leftovers = blobs.filter((name) => !paths.has(name));
    if (leftovers.length === 0) break;
  }
  check(
    'no staging or leftover blob',
    leftovers.length === 0,
    leftovers.length ? `left after 60 s: ${leftovers.join(', ')}` : `the container holds ${blobs.length} blob: ${blobs.join(', ')}`,
  );

  const quota = await db.query<{ used_bytes: string; lora_count: number }>(
    'SELECT used_bytes::text, lora_count FROM user_lora_quota WHERE user_id = $1',
    [userA],
  );
  const open = await db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM upload_session WHERE user_id = $1 AND state IN ('OPEN', 'COMPLETING')",
    [userA],
  );
  check(
    'quota counts the file once',
    quota.rows[0]?.used_bytes === String(size) && quota.rows[0]?.lora_count === 1 && open.rows[0]?.n === 0,
    `used ${quota.rows[0]?.used_bytes} bytes, ${quota.rows[0]?.lora_count} LoRA, ${open.rows[0]?.n} open reservation(s)`,
  );
  return report(file, run, checks);
}

function report(file: BenchFile, run: RestartSequenceResult, checks: { what: string; ok: boolean; detail: string }[]): number {
  const ok = checks.length > 0 && checks.every((c) => c.ok);
  const p = run.phases;
  const r = run.restarted.result;
  const line = '─'.repeat(110);
  console.log(
    [
      '',
      line,
      `SUMMARY — ${SIZE_MIB} MiB resumable upload (SDK uploadLoraResumable in child processes, ${CONCURRENCY} blocks in flight) through a cut network and a crashed client`,
      line,
      `phases: start → cut ${s(p.beforeCut)} │ outage ${s(p.outage)} (${run.refusedDuringOutage} connections refused) │ network back → first byte again ${s(p.backToFirstByte)} │ back → SIGKILL ${s(p.backToKill)} │ restarted process ${s(p.restarted)} (incl. completeLoraUpload)`,
      `bytes toward storage: ${(run.bytesToStorage / MiB).toFixed(1)} MiB = ${(run.bytesToStorage / file.size).toFixed(3)} × the file (first process ${(run.bytesFirst / MiB).toFixed(1)} MiB, restarted ${(run.bytesRestarted / MiB).toFixed(1)} MiB)`,
      r
        ? `restarted process: skipped ${r.stats.blocksResumed} blocks storage held, sent ${r.stats.blocksSent} of ${run.blockCount}`
        : 'restarted process: failed',
      line,
      ...checks.map((c) => `${c.ok ? 'ok  ' : 'FAIL'} ${c.what}: ${c.detail}`),
      line,
      `RESULT: ${ok ? 'PASS' : 'FAIL'} — ${SIZE_MIB} MiB, cut ${OUTAGE_MS / 1000} s at 30 % + SIGKILL at 60 % + new process: ${(run.bytesToStorage / file.size).toFixed(3)}× the file sent (target ≤ ${RESUMABLE_MAX_RESENT}), ` +
        `restart skipped ${r?.stats.blocksResumed ?? '?'}/${run.blockCount} blocks and sent ${r?.stats.blocksSent ?? '?'}; ${checks.filter((c) => c.ok).length}/${checks.length} checks ok`,
      line,
    ].join('\n'),
  );
  return ok ? 0 : 1;
}

await runBench(main);
