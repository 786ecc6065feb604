import { PrismaPg } from '@prisma/adapter-pg';
import { type Prisma, PrismaClient } from './generated/client.ts';

export type Db = PrismaClient;
export type Tx = Prisma.TransactionClient;

/**
 * How long a transaction waits for a pooled connection. Prisma's default (2 s) failed bursts
 * with INTERNAL_SERVER_ERROR: 50 uploads and deletes of one user queue on that user's quota row,
 * each holding a connection while it waits, so later ones found the pool empty for > 2 s.
 */
const TRANSACTION_MAX_WAIT_MS = 15_000;
/**
 * How long an interactive transaction may run. Prisma's default (5 s) counts the time spent
 * queued on a row lock: in the same bursts, a finalize behind 49 others on one quota row was
 * rolled back on a loaded machine. Our transactions do no I/O but SQL, so 15 s is still a bound.
 */
const TRANSACTION_TIMEOUT_MS = 15_000;

/** A Prisma client on the pg driver adapter (Prisma 7 needs one); the caller disconnects it. */
export function createDb(databaseUrl: string, options: { poolSize?: number } = {}): Db {
  const adapter = new PrismaPg({ connectionString: databaseUrl, max: options.poolSize ?? 10 });
  return new PrismaClient({ adapter, transactionOptions: { maxWait: TRANSACTION_MAX_WAIT_MS, timeout: TRANSACTION_TIMEOUT_MS } });
}
