import type { TestServer } from './server.ts';

/** Database rows read behind the API's back, to check what a request did (or did not) change. */

export async function quotaRow(server: TestServer, userId: string) {
  return server.app.db.user_lora_quota.findUnique({ where: { user_id: userId } });
}

export async function loraRow(server: TestServer, id: string) {
  return server.app.db.lora.findUniqueOrThrow({ where: { file_id: BigInt(id) } });
}
