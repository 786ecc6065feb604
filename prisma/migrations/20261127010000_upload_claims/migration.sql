-- Who owns a client-chosen uploadId: claimed by the first subscriber or uploader, so nobody else
-- can follow (or hijack) that upload's progress. Old claims are removed by the reconciler.
CREATE TABLE "upload_claim" (
    "upload_id" UUID NOT NULL,
    "user_id" UUID NOT NULL,
    "created_at" TIMESTAMPTZ(6) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT "upload_claim_pkey" PRIMARY KEY ("upload_id")
);
CREATE INDEX "upload_claim_created_at_idx" ON "upload_claim"("created_at");
