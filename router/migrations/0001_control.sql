-- Router control schema, version 1: the global control plane. Dashboard
-- accounts, sessions and memberships, and the project and key directories the
-- router routes by. No customer data and no key secrets or hashes live here.

CREATE TYPE membership_role AS ENUM ('owner', 'admin', 'agent', 'viewer');
CREATE TYPE project_state AS ENUM ('provisioning', 'active', 'copying', 'fenced', 'flipped', 'purged', 'failed');

CREATE TABLE admin_users (
    id             UUID PRIMARY KEY,
    email          VARCHAR(255) NOT NULL UNIQUE,
    password_hash  VARCHAR(255) NOT NULL,
    name           VARCHAR(255),
    avatar_url     TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_login_at  TIMESTAMPTZ
);

CREATE TABLE admin_sessions (
    id            UUID PRIMARY KEY,
    user_id       UUID NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    token_hash    VARCHAR(64) NOT NULL UNIQUE,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at    TIMESTAMPTZ NOT NULL,
    revoked_at    TIMESTAMPTZ,
    last_used_at  TIMESTAMPTZ
);

-- region is TEXT, not an enum: the list of regions is configuration.
CREATE TABLE project_directory (
    id          UUID PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    region      TEXT NOT NULL,
    state       project_state NOT NULL DEFAULT 'provisioning',
    epoch       BIGINT NOT NULL DEFAULT 1,
    created_by  UUID REFERENCES admin_users(id) ON DELETE SET NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE project_memberships (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL REFERENCES admin_users(id) ON DELETE CASCADE,
    project_id  UUID NOT NULL REFERENCES project_directory(id) ON DELETE CASCADE,
    role        membership_role NOT NULL,
    joined_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (user_id, project_id)
);

-- Routing only: prefix to project and region. The key's hash stays in the
-- project's cell.
CREATE TABLE key_directory (
    key_prefix  VARCHAR(12) PRIMARY KEY,
    key_id      UUID NOT NULL UNIQUE,
    project_id  UUID NOT NULL REFERENCES project_directory(id) ON DELETE CASCADE,
    region      TEXT NOT NULL,
    revoked     BOOLEAN NOT NULL DEFAULT false,
    pending     BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Provisioning steps toward cells, written in the same transaction as the
-- directory change and retried until the cell acknowledges.
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    project_id     UUID REFERENCES project_directory(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    payload        JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    dispatched_at  TIMESTAMPTZ
);

CREATE INDEX idx_admin_sessions_user ON admin_sessions(user_id);
CREATE INDEX idx_project_memberships_project ON project_memberships(project_id);
CREATE INDEX idx_key_directory_project ON key_directory(project_id);
CREATE INDEX idx_outbox_pending ON outbox(available_at, id) WHERE dispatched_at IS NULL;
