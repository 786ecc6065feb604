-- Issue 13 §4-5: account deletion with a retention window, and a readable audit log.

-- LoRAs hidden by an account deletion: not READY (no list, download, grant or quota counts them),
-- but their blobs are kept until the purge, so an admin's cancel can restore them.
ALTER TYPE "lora_status" ADD VALUE IF NOT EXISTS 'SUSPENDED';

-- One row per user whose LoRA account is deleted (server/services/accounts.ts). While it exists the
-- user's uploads and job grants are refused. `deletion_id` names this request: the purge job
-- carries it, so a job of a cancelled (and later repeated) deletion does nothing. The row stays
-- after the purge (`purged_at`) as the tombstone that keeps refusing; it holds no user content.
CREATE TABLE "lora_account_deletion" (
    "user_id" UUID NOT NULL,
    "deletion_id" UUID NOT NULL,
    "requested_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "purge_after" TIMESTAMPTZ(6) NOT NULL,
    "requested_by_role" TEXT NOT NULL,
    "requested_by_id" TEXT,
    "purge_started_at" TIMESTAMPTZ(6),
    "purged_at" TIMESTAMPTZ(6),
    CONSTRAINT "lora_account_deletion_pkey" PRIMARY KEY ("user_id")
);
CREATE INDEX "lora_account_deletion_due_idx" ON "lora_account_deletion"("purge_after") WHERE "purged_at" IS NULL;

-- The audit log, readable: the request an entry came from, and indexes for the admin's filters
-- (newest first by id), the time range and the retention job.
ALTER TABLE "audit_log" ADD COLUMN "request_id" TEXT;
CREATE INDEX "audit_log_at_idx" ON "audit_log"("at");
CREATE INDEX "audit_log_user_id_id_idx" ON "audit_log"("user_id", "id" DESC);
CREATE INDEX "audit_log_action_id_idx" ON "audit_log"("action", "id" DESC);
