DROP TABLE readiness;
DROP TABLE alias_changes;
DROP INDEX inbox_messages_unsolicited;
ALTER TABLE inbox_messages DROP COLUMN sender;
