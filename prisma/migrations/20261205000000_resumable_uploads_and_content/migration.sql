-- Issue 17. Resumable direct-to-Blob uploads (upload_session) and content stored once per
-- sha256 (lora_blob, with a reference count). Every LoRA written from now on names a base blob
-- of lora_blob (many LoRAs may name one) and its own snapshot of it; older LoRAs keep their own
-- blob and no snapshot (blob_snapshot NULL) and are deleted as before.

DROP INDEX IF EXISTS "lora_blob_path_key";
CREATE INDEX "lora_blob_path_idx" ON "lora"("blob_path");
ALTER TABLE "lora" ADD COLUMN "blob_snapshot" TEXT;

-- One stored content: a base blob at a neutral path (content/{uuid}.{ext}) of the LoRA container
-- and the number of READY LoRAs naming it. At most one linkable row per container and sha256; a row whose base no longer matches
-- its etag (written through an upload SAS after validation) stops being linkable.
CREATE TABLE "lora_blob" (
    "blob_path" TEXT NOT NULL,
    "container" TEXT NOT NULL,
    "sha256" CHAR(64) NOT NULL,
    "size_bytes" BIGINT NOT NULL,
    "etag" TEXT NOT NULL,
    "ref_count" INTEGER NOT NULL DEFAULT 0,
    "linkable" BOOLEAN NOT NULL DEFAULT true,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "lora_blob_pkey" PRIMARY KEY ("blob_path"),
    CONSTRAINT "lora_blob_ref_count_check" CHECK ("ref_count" >= 0)
);
CREATE UNIQUE INDEX "lora_blob_sha256_linkable_key" ON "lora_blob"("container", "sha256") WHERE "linkable";
CREATE INDEX "lora_blob_ref_count_zero_idx" ON "lora_blob"("updated_at") WHERE "ref_count" = 0;

CREATE TYPE "upload_session_state" AS ENUM ('OPEN', 'COMPLETING', 'COMPLETED', 'FAILED', 'ABORTED', 'EXPIRED');

-- A resumable upload: its reservation (size_bytes and one LoRA) counts against the user's quota
-- while OPEN or COMPLETING and unexpired.
CREATE TABLE "upload_session" (
    "id" UUID NOT NULL,
    "user_id" UUID NOT NULL,
    "state" "upload_session_state" NOT NULL DEFAULT 'OPEN',
    "file_name" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "user_metadata" JSONB,
    "declared_sha256" CHAR(64),
    "size_bytes" BIGINT NOT NULL,
    "block_bytes" INTEGER NOT NULL,
    "blob_path" TEXT NOT NULL,
    "lora_id" BIGINT,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expires_at" TIMESTAMPTZ(6) NOT NULL,
    CONSTRAINT "upload_session_pkey" PRIMARY KEY ("id")
);
CREATE UNIQUE INDEX "upload_session_blob_path_key" ON "upload_session"("blob_path");
CREATE INDEX "upload_session_user_live_idx" ON "upload_session"("user_id") WHERE "state" IN ('OPEN', 'COMPLETING');
CREATE INDEX "upload_session_expires_at_idx" ON "upload_session"("expires_at") WHERE "state" IN ('OPEN', 'COMPLETING');
