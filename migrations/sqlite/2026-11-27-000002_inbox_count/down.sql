ALTER TABLE users DROP COLUMN inbox_count;
