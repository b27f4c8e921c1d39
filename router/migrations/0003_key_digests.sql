-- Keys verified at the edge, version 3.
--
-- The router checks every presented key, prefix and secret, before anything
-- else, from its in-memory directory, so a made-up secret never costs a cell
-- anything. It keeps per key:
--   key_digest  hex HMAC-SHA256 of the whole key under the deployment's key
--               pepper (RELAY_KEY_PEPPER); never the key itself. NULL for a key
--               created before this version: the router asks the key's cell
--               to verify it once and records the digest only after the cell
--               accepted it.
--   scopes      the key's scopes, so router endpoints enforce them too (an
--               ingest key reads nothing of the control plane).
--   expires_at  refused at the edge once past.
ALTER TABLE key_directory
    ADD COLUMN key_digest  CHAR(64),
    ADD COLUMN scopes      TEXT[] NOT NULL DEFAULT '{}',
    ADD COLUMN expires_at  TIMESTAMPTZ;
