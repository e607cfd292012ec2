CREATE TABLE replay_keys_old (
    replay_key BLOB PRIMARY KEY NOT NULL,
    sender TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
INSERT INTO replay_keys_old SELECT replay_key, sender, nonce, expires_at FROM replay_keys;
DROP TABLE replay_keys;
ALTER TABLE replay_keys_old RENAME TO replay_keys;
CREATE UNIQUE INDEX replay_keys_sender_nonce ON replay_keys (sender, nonce) WHERE nonce <> '';
CREATE INDEX replay_keys_by_expiry ON replay_keys (expires_at);
