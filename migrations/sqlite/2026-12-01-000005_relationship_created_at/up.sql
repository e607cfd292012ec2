-- When each relationship was created from none (PROTOCOL.md section 9,
-- revision 1.1); it does not move while the relationship changes state. A
-- REVOKE signed before it (section 11, order) leaves the relationship in
-- place. For a relationship made before this migration the creation time
-- is not known, and 0 (the epoch) keeps version 1's behaviour for it: any
-- REVOKE removes it. (Its `since` would be wrong the other way: a REVOKE
-- signed after the creation but before the last state change would be
-- taken for an older one and ignored.)
ALTER TABLE relationships ADD COLUMN created_at BIGINT NOT NULL DEFAULT 0;
