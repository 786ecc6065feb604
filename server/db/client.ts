import { PrismaPg } from '@prisma/adapter-pg';
import { type Prisma, PrismaClient } from './generated/client.ts';

export type Db = PrismaClient;
export type Tx = Prisma.TransactionClient;

/** A Prisma client on the pg driver adapter (Prisma 7 needs one); the caller disconnects it. */
export function createDb(databaseUrl: string, options: { poolSize?: number } = {}): Db {
  const adapter = new PrismaPg({ connectionString: databaseUrl, max: options.poolSize ?? 10 });
  return new PrismaClient({ adapter });
}
