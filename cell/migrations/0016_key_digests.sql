-- API keys stored as a keyed digest, version 16.
--
-- A key's secret is about 190 random bits: bcrypt's cost protects nothing
-- there and makes every wrong secret expensive to refuse. New keys store only
-- key_digest, hex HMAC-SHA256 of the whole key under the deployment's key
-- pepper (RELAY_KEY_PEPPER, the same in every region so a moved key keeps
-- verifying). Keys created before this version keep their bcrypt key_hash
-- until their next successful use, which writes the digest and clears the hash.
ALTER TABLE api_keys
    ADD COLUMN key_digest CHAR(64),
    ALTER COLUMN key_hash DROP NOT NULL,
    ADD CONSTRAINT api_keys_verifiable CHECK (key_digest IS NOT NULL OR key_hash IS NOT NULL);
