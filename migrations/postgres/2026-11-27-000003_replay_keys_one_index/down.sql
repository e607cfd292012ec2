DROP INDEX replay_keys_without_nonce;
ALTER TABLE replay_keys DROP COLUMN id;
ALTER TABLE replay_keys ADD PRIMARY KEY (replay_key);
