-- The lifecycle of projects and accounts, and the router's own audit trail, version 6.
--
-- project_state `deleting`: the owner asked for the project's deletion; its
-- cell refuses every request for it while it erases every row and object, and
-- the router forgets the project and its keys once the cell's signed deletion
-- receipt is in (router/projects/lifecycle.py). The value is only added here:
-- an enum value cannot be used in the transaction that creates it.
ALTER TYPE project_state ADD VALUE IF NOT EXISTS 'deleting';

-- One row per project deletion, kept after the directory forgets the project
-- (no foreign key to project_directory on purpose): who asked, where, and the
-- cell's receipt. Ids, a region, counts and hashes only: no name, no content.
--   erasing  the cell is erasing (driven by the `project.delete` outbox row)
--   done     the receipt is stored and the project is gone from the directory
CREATE TABLE project_deletions (
    id            UUID PRIMARY KEY,
    project_id    UUID NOT NULL UNIQUE,
    region        TEXT NOT NULL,
    epoch         BIGINT NOT NULL,
    requested_by  UUID,
    state         TEXT NOT NULL DEFAULT 'erasing' CHECK (state IN ('erasing', 'done')),
    progress      JSONB NOT NULL DEFAULT '{}',
    receipt       JSONB,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at   TIMESTAMPTZ
);

-- The router's audit trail (router/audit.py): its writes and sign-ins. Ids,
-- the action, its target, the time and a truncated client address; never a
-- name, an email address, a password or a token. No foreign keys: entries
-- outlive the projects and accounts they name.
--   actor_type  admin (a dashboard account), api (an API key, by prefix),
--               system (the router itself), anonymous (a failed sign-in)
CREATE TABLE audit_logs (
    id                UUID PRIMARY KEY,
    project_id        UUID,
    actor_type        TEXT NOT NULL CHECK (actor_type IN ('admin', 'api', 'system', 'anonymous')),
    actor_user_id     UUID,
    actor_key_prefix  VARCHAR(12),
    action            VARCHAR(100) NOT NULL,
    target_type       VARCHAR(50),
    target_id         VARCHAR(100),
    meta              JSONB NOT NULL DEFAULT '{}',
    ip_address        VARCHAR(45),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX idx_audit_logs_project ON audit_logs(project_id, created_at DESC, id DESC) WHERE project_id IS NOT NULL;
CREATE INDEX idx_audit_logs_actor ON audit_logs(actor_user_id, created_at DESC, id DESC)
    WHERE actor_user_id IS NOT NULL;
CREATE INDEX idx_audit_logs_target ON audit_logs(target_type, target_id, created_at DESC, id DESC);

-- Password reset links: the token is sent once by email and stored only as its
-- SHA-256; it expires, and works once (used_at).
CREATE TABLE password_resets (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    token_hash  VARCHAR(64) NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ NOT NULL,
    used_at     TIMESTAMPTZ
);

CREATE INDEX idx_password_resets_user ON password_resets(user_id);
