-- Issue 17: a resumable upload records where it came from, as multipart's `uploadSource` does
-- (docs/flat-file.md, `upload_source`). What beginLoraUpload was given is kept on the session and
-- written to flat_file.gen_out_data at completion; sessions that named none (and those begun
-- before this migration) record `resumable`, as before.
ALTER TABLE "upload_session" ADD COLUMN "upload_source" TEXT NOT NULL DEFAULT 'resumable';
ALTER TABLE "upload_session" ADD CONSTRAINT "upload_session_upload_source_check"
    CHECK ("upload_source" IN ('emprops_studio', 'api', 'resumable'));
