-- The inbox limit is checked on every stored envelope: keep the count
-- instead of counting rows each time.
ALTER TABLE users ADD COLUMN inbox_count BIGINT NOT NULL DEFAULT 0;
UPDATE users SET inbox_count = (SELECT COUNT(*) FROM inbox_messages m WHERE m.user_id = users.id);
