-- Progress of data upgrades that rewrite existing rows in the background, batch by batch, while
-- the server serves (server/jobs/gen-out-data-upgrade.ts). A migration runs in one transaction,
-- which over millions of flat_file rows would hold their locks for the whole rewrite; here the
-- migration only registers the upgrade, and every batch is its own short transaction that moves
-- `cursor` (the last LoRA id done) under this row's lock, so replicas take turns and a restart
-- resumes where the last batch ended.
CREATE TABLE "data_upgrade" (
    "name" TEXT NOT NULL,
    "cursor" BIGINT NOT NULL DEFAULT 0,
    "rows_rewritten" BIGINT NOT NULL DEFAULT 0,
    "started_at" TIMESTAMPTZ(6),
    "updated_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "finished_at" TIMESTAMPTZ(6),
    CONSTRAINT "data_upgrade_pkey" PRIMARY KEY ("name")
);

-- LoRA rows of flat_file written before docs/flat-file.md: gen_out_data into the seed's shape.
INSERT INTO "data_upgrade" ("name") VALUES ('flat_file.gen_out_data.seed_shape');
