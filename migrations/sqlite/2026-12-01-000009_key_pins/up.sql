-- What this server pinned of remote handles' key logs (PROTOCOL.md
-- section 12): one row per remote handle, written only when an envelope
-- from it was accepted and stored, moved by compare-and-set on (seq, head).
CREATE TABLE key_pins (
    handle TEXT PRIMARY KEY,
    -- For `fedid-server federation unpin --domain D`.
    domain TEXT NOT NULL,
    seq BIGINT NOT NULL,
    head TEXT NOT NULL,
    -- The pinned entry's entry bytes, whole.
    entry TEXT NOT NULL,
    -- The pinned entry's class (NULL: a `reset` entry).
    class TEXT,
    -- The signing key of the `keys` entry before it (the rotation grace).
    previous_signing_key TEXT,
    -- What the latest move crossed, and when this server made it.
    change TEXT NOT NULL,
    changed_at BIGINT NOT NULL,
    -- `lastBreak`: the latest `reset` or `replaced` class seen.
    break_seq BIGINT,
    break_change TEXT,
    break_at TEXT,
    break_seen_at BIGINT
);
CREATE INDEX key_pins_by_domain ON key_pins (domain);

-- Conflicts for the operator: one per pinned handle, until it is unpinned.
CREATE TABLE key_log_conflicts (
    handle TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    at BIGINT NOT NULL,
    pinned_seq BIGINT NOT NULL,
    pinned_head TEXT NOT NULL,
    offered_seq BIGINT,
    offered_head TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX key_log_conflicts_by_domain ON key_log_conflicts (domain);
