DROP INDEX revocations_due;
ALTER TABLE revocations DROP COLUMN unauthorized;
ALTER TABLE revocations DROP COLUMN retries;
ALTER TABLE revocations DROP COLUMN next_attempt_at;
ALTER TABLE revocations DROP COLUMN expires_at;
ALTER TABLE revocations DROP COLUMN envelope;
