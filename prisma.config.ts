import { defineConfig } from 'prisma/config';

// Used by the Prisma CLI only (generate; migrate where an engine is available).
// The server never reads this file: it builds its own client from server/config.ts.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
  datasource: { url: process.env.DATABASE_URL ?? 'postgresql://localhost:5432/lora_vault' },
});
