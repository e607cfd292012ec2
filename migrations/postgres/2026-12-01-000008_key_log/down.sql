DROP TABLE key_log;
