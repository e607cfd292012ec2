ALTER TABLE relationships DROP COLUMN created_at;
