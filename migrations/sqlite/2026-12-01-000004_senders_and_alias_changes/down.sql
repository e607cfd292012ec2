DROP TABLE readiness;
DROP TABLE alias_changes;
DROP INDEX inbox_messages_by_sender;
ALTER TABLE inbox_messages DROP COLUMN sender;
