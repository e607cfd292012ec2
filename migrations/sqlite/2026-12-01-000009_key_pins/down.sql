DROP TABLE key_log_conflicts;
DROP TABLE key_pins;
