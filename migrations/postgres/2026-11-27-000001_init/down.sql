DROP TABLE audit_log;
DROP TABLE replay_keys;
DROP TABLE revocations;
DROP TABLE inbox_messages;
DROP TABLE relationships;
DROP TABLE sessions;
DROP TABLE alias_history;
DROP TABLE users;
