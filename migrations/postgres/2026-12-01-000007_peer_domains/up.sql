-- What this server knows of each peer domain it delivered to (PROTOCOL.md
-- section 11, per-domain health), kept in the database so that every
-- instance sees it. Never sent to peers.
CREATE TABLE peer_domains (
    domain TEXT PRIMARY KEY,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_success_at BIGINT,
    last_failure_at BIGINT,
    last_failure TEXT,
    -- The first failure since the last success: seven days of it make the
    -- domain unreachable.
    failing_since BIGINT,
    -- While a domain is failing, the one instance holding this lease may
    -- have a delivery to it in flight; the others wait (section 11).
    lease_until BIGINT
);
