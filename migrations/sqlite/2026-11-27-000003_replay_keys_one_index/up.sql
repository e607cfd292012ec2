-- One index to update per accepted envelope instead of two. An envelope
-- with a nonce is found by its sender and nonce (at most one live row
-- each), so its replay key needs no index; only envelopes without a nonce
-- are found by replay key. Rows are appended in rowid order.
CREATE TABLE replay_keys_new (
    id INTEGER PRIMARY KEY,
    replay_key BLOB NOT NULL,
    sender TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
INSERT INTO replay_keys_new (replay_key, sender, nonce, expires_at)
    SELECT replay_key, sender, nonce, expires_at FROM replay_keys ORDER BY expires_at;
DROP TABLE replay_keys;
ALTER TABLE replay_keys_new RENAME TO replay_keys;
CREATE UNIQUE INDEX replay_keys_sender_nonce ON replay_keys (sender, nonce) WHERE nonce <> '';
CREATE UNIQUE INDEX replay_keys_without_nonce ON replay_keys (replay_key) WHERE nonce = '';
CREATE INDEX replay_keys_by_expiry ON replay_keys (expires_at);
