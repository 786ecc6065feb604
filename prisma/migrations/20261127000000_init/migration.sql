-- lora-vault initial schema. Hand-written to match prisma/schema.prisma, plus what Prisma's
-- schema language cannot say (extensions, partial and expression indexes).

CREATE EXTENSION IF NOT EXISTS pg_trgm;
-- GIN operator classes for scalar types (uuid): lets one GIN index hold an owner and name trigrams.
CREATE EXTENSION IF NOT EXISTS btree_gin;

-- The platform's existing table (CREATE IF NOT EXISTS: on a platform database it is already there).
CREATE TABLE IF NOT EXISTS "flat_file" (
    "id" BIGSERIAL NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "url" TEXT,
    "hidden" BOOLEAN NOT NULL DEFAULT false,
    "user_id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "gen_in_data" JSONB,
    "gen_out_data" JSONB,
    "mime_type" TEXT,
    "tags" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "rel_id" TEXT,
    "rel_type" TEXT,
    CONSTRAINT "flat_file_pkey" PRIMARY KEY ("id")
);
CREATE INDEX IF NOT EXISTS "flat_file_user_id_idx" ON "flat_file"("user_id");
CREATE INDEX IF NOT EXISTS "flat_file_tags_gin_idx" ON "flat_file" USING GIN ("tags");

CREATE TYPE "lora_status" AS ENUM ('UPLOADING', 'READY', 'FAILED', 'DELETED');
CREATE TYPE "lora_format" AS ENUM ('SAFETENSORS', 'PT');

CREATE TABLE "lora" (
    "file_id" BIGINT NOT NULL,
    "user_id" UUID NOT NULL,
    "status" "lora_status" NOT NULL DEFAULT 'UPLOADING',
    "name" TEXT NOT NULL,
    "file_name" TEXT NOT NULL,
    "format" "lora_format" NOT NULL,
    "size_bytes" BIGINT NOT NULL CHECK ("size_bytes" >= 0),
    "sha256" CHAR(64) NOT NULL,
    "blob_path" TEXT NOT NULL,
    "base_model" TEXT,
    "base_model_source" TEXT,
    "rank" INTEGER,
    "alpha" DOUBLE PRECISION,
    "metadata" JSONB NOT NULL DEFAULT '{}',
    "user_metadata" JSONB NOT NULL DEFAULT '{}',
    "usage_count" INTEGER NOT NULL DEFAULT 0,
    "last_used_at" TIMESTAMPTZ(6),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deleted_at" TIMESTAMPTZ(6),
    CONSTRAINT "lora_pkey" PRIMARY KEY ("file_id"),
    CONSTRAINT "lora_file_id_fkey" FOREIGN KEY ("file_id") REFERENCES "flat_file"("id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE UNIQUE INDEX "lora_blob_path_key" ON "lora"("blob_path");
-- One index per list order; each serves both directions (the id tie-breaker follows the key).
CREATE INDEX "lora_ready_user_created_idx" ON "lora"("user_id", "created_at", "file_id") WHERE "status" = 'READY';
CREATE INDEX "lora_ready_user_name_idx" ON "lora"("user_id", lower("name") COLLATE "C", "file_id") WHERE "status" = 'READY';
CREATE INDEX "lora_ready_user_size_idx" ON "lora"("user_id", "size_bytes", "file_id") WHERE "status" = 'READY';
CREATE INDEX "lora_ready_user_last_used_idx" ON "lora"("user_id", "last_used_at" DESC NULLS LAST, "file_id" DESC) WHERE "status" = 'READY';
-- Name search: owner and name trigrams in one GIN index, so a user's search reads only that
-- user's matches (a trigram-only index returns every user's matches, then filters them by owner).
-- GIN serves any subset of its columns equally well: admin searches across users use it too.
CREATE INDEX "lora_ready_user_name_trgm_idx" ON "lora" USING GIN ("user_id", lower("name") gin_trgm_ops) WHERE "status" = 'READY';
CREATE INDEX "lora_status_updated_idx" ON "lora"("status", "updated_at") WHERE "status" <> 'READY';

CREATE TABLE "user_lora_quota" (
    "user_id" UUID NOT NULL,
    "max_storage_bytes" BIGINT CHECK ("max_storage_bytes" >= 0),
    "max_lora_count" INTEGER CHECK ("max_lora_count" >= 0),
    "used_bytes" BIGINT NOT NULL DEFAULT 0 CHECK ("used_bytes" >= 0),
    "lora_count" INTEGER NOT NULL DEFAULT 0 CHECK ("lora_count" >= 0),
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "user_lora_quota_pkey" PRIMARY KEY ("user_id")
);

CREATE TABLE "lora_workflow_usage" (
    "lora_id" BIGINT NOT NULL,
    "workflow_id" TEXT NOT NULL,
    "workflow_name" TEXT,
    "use_count" INTEGER NOT NULL DEFAULT 0,
    "last_used_at" TIMESTAMPTZ(6) NOT NULL,
    CONSTRAINT "lora_workflow_usage_pkey" PRIMARY KEY ("lora_id", "workflow_id"),
    CONSTRAINT "lora_workflow_usage_lora_id_fkey" FOREIGN KEY ("lora_id") REFERENCES "lora"("file_id") ON DELETE CASCADE ON UPDATE CASCADE
);
CREATE INDEX "lora_workflow_usage_lora_id_last_used_at_idx" ON "lora_workflow_usage"("lora_id", "last_used_at" DESC);

CREATE TABLE "machine_cache_report" (
    "id" BIGSERIAL NOT NULL,
    "machine_id" TEXT NOT NULL,
    "reported_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "total_lora_cache_bytes" BIGINT NOT NULL,
    "max_lora_cache_bytes" BIGINT NOT NULL,
    "user_lora_count" INTEGER NOT NULL,
    "shared_lora_count" INTEGER NOT NULL,
    "cache_hit_rate_24h" DOUBLE PRECISION NOT NULL,
    "evictions_24h" INTEGER NOT NULL,
    "oldest_lora_age_days" DOUBLE PRECISION NOT NULL,
    CONSTRAINT "machine_cache_report_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "machine_cache_report_machine_id_reported_at_idx" ON "machine_cache_report"("machine_id", "reported_at" DESC);

CREATE TABLE "audit_log" (
    "id" BIGSERIAL NOT NULL,
    "at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "actor_role" TEXT NOT NULL,
    "actor_id" TEXT,
    "action" TEXT NOT NULL,
    "user_id" UUID,
    "lora_id" BIGINT,
    "details" JSONB NOT NULL DEFAULT '{}',
    CONSTRAINT "audit_log_pkey" PRIMARY KEY ("id")
);
CREATE INDEX "audit_log_user_id_at_idx" ON "audit_log"("user_id", "at" DESC);
CREATE INDEX "audit_log_lora_id_idx" ON "audit_log"("lora_id");
