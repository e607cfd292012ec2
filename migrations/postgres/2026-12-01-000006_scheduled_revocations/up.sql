-- A queued revocation may hold a long-lived REVOKE (PROTOCOL.md section
-- 11) that the server delivers by itself: its wire form and `expires`,
-- when it is due next, how many background attempts it has had and how
-- many `401` answers. Rows queued before hold none: only a flush delivers
-- them, as before.
ALTER TABLE revocations ADD COLUMN envelope TEXT;
ALTER TABLE revocations ADD COLUMN expires_at BIGINT;
ALTER TABLE revocations ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE revocations ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE revocations ADD COLUMN unauthorized INTEGER NOT NULL DEFAULT 0;
-- The deliverer's scan: due rows only.
CREATE INDEX revocations_due ON revocations (next_attempt_at) WHERE next_attempt_at IS NOT NULL;
