-- A project's own secret (the HMAC key of its conversation tokens and of sessions' ip_hash) is sealed at rest
-- like every other secret (cell/secrets.py, purpose `project:secret`): `sealed_secret` holds it and `secret`
-- is NULL once sealed. SQL holds no key, so rows from before are sealed by the cell when it starts
-- (cell/projects/secret.py). `sealed_secret` is a cell-only column: a move carries the secret itself over
-- the signed hop and the target seals it with its own key (cell/moves).
ALTER TABLE projects ADD COLUMN sealed_secret TEXT;
ALTER TABLE projects ALTER COLUMN secret DROP NOT NULL;
