-- Times are nanoseconds since the Unix epoch (UTC); keys and hashes are raw bytes.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at BIGINT NOT NULL,
    alias TEXT UNIQUE,
    signing_key BLOB,
    encryption_key BLOB,
    keys_updated_at BIGINT,
    last_reset_at BIGINT
);

-- Every alias a user ever held: aliases are never reused.
CREATE TABLE alias_history (
    alias TEXT PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id)
);

CREATE TABLE sessions (
    token_hash BLOB PRIMARY KEY NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_by_user ON sessions (user_id);

CREATE TABLE relationships (
    user_id BIGINT NOT NULL REFERENCES users(id),
    peer TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('outgoing', 'incoming', 'active')),
    since BIGINT NOT NULL,
    PRIMARY KEY (user_id, peer)
);

CREATE TABLE inbox_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id),
    received_at BIGINT NOT NULL,
    envelope TEXT NOT NULL
);
CREATE INDEX inbox_messages_by_user ON inbox_messages (user_id, id);

CREATE TABLE revocations (
    user_id BIGINT NOT NULL REFERENCES users(id),
    peer TEXT NOT NULL,
    queued_at BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_attempt_at BIGINT,
    last_error TEXT,
    claimed_until BIGINT,
    PRIMARY KEY (user_id, peer)
);

CREATE TABLE replay_keys (
    replay_key BLOB PRIMARY KEY NOT NULL,
    sender TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX replay_keys_sender_nonce ON replay_keys (sender, nonce) WHERE nonce <> '';
CREATE INDEX replay_keys_by_expiry ON replay_keys (expires_at);

CREATE TABLE audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id BIGINT NOT NULL REFERENCES users(id),
    at BIGINT NOT NULL,
    action TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX audit_log_by_user ON audit_log (user_id, id);
