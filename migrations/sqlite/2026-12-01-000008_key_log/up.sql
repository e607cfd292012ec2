-- Each user's key log (PROTOCOL.md section 12): one row per entry, its
-- entry bytes (RFC 8785) as served, append-only: nothing updates or
-- deletes these rows, and the primary key makes the loser of two appends
-- at one seq fail. `appended_at` (server time) bounds appends per day.
-- Users whose keys predate the log get their first entry from the server
-- at start (fedid-server), not here: building an entry needs RFC 8785.
CREATE TABLE key_log (
    user_id BIGINT NOT NULL REFERENCES users(id),
    seq BIGINT NOT NULL,
    entry TEXT NOT NULL,
    -- SHA-256 of the entry bytes, unpadded base64url: the head, read without
    -- hashing again.
    hash TEXT NOT NULL,
    appended_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX key_log_appended ON key_log (user_id, appended_at);
