-- One index to update per accepted envelope instead of two. An envelope
-- with a nonce is found by its sender and nonce (at most one live row
-- each), so its replay key needs no index; only envelopes without a nonce
-- are found by replay key.
ALTER TABLE replay_keys DROP CONSTRAINT replay_keys_pkey;
ALTER TABLE replay_keys ADD COLUMN id BIGSERIAL PRIMARY KEY;
CREATE UNIQUE INDEX replay_keys_without_nonce ON replay_keys (replay_key) WHERE nonce = '';
