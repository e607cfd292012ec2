-- The sender of each message stored without the recipient's consent (no
-- active relationship): those are bounded per sender
-- (limits.unsolicited_per_sender). '' for the others, which the partial
-- index leaves out, so that storing a consented message costs nothing
-- more. Whether a message stored before this migration was consented is
-- not known: those count for the inbox, not against their sender.
ALTER TABLE inbox_messages ADD COLUMN sender TEXT NOT NULL DEFAULT '';
CREATE INDEX inbox_messages_unsolicited ON inbox_messages (user_id, sender) WHERE sender <> '';

-- Every alias change, for limits.alias_changes_per_day and
-- limits.alias_changes_total. Aliases set before this migration are known
-- from alias_history without a time: they count towards the total only.
CREATE TABLE alias_changes (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    at BIGINT NOT NULL
);
CREATE INDEX alias_changes_by_user ON alias_changes (user_id, at);
INSERT INTO alias_changes (user_id, at) SELECT user_id, 0 FROM alias_history;

-- /readyz writes here: a database that refuses writes (a full disk) makes
-- the server unready, not only one that does not answer.
CREATE TABLE readiness (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    checked_at BIGINT NOT NULL
);
INSERT INTO readiness (id, checked_at) VALUES (1, 0);
