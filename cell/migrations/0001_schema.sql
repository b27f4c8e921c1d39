-- Cell schema, version 1: every customer-data table of the Relay data model
-- (seed/relay-data-model.md) for one region, plus the transactional outbox.
-- admin_users and project_memberships live in the router's control DB.
--
-- Tenancy: each referenced table has UNIQUE (project_id, id) and every
-- reference is a composite (project_id, x_id) key, so a row can never point at
-- another project's row. assignee_id, created_by and author_id are router
-- admin_users ids in another database, hence no foreign key.

CREATE TYPE region AS ENUM ('us-west', 'eu-west');
CREATE TYPE environment AS ENUM ('production', 'staging', 'development');
CREATE TYPE interaction_type AS ENUM ('bug', 'feedback', 'chat', 'survey', 'replay', 'system');
CREATE TYPE interaction_source AS ENUM ('widget', 'sdk', 'api');
CREATE TYPE interaction_status AS ENUM ('new', 'triaging', 'in_progress', 'resolved', 'closed');
CREATE TYPE severity AS ENUM ('low', 'med', 'high', 'critical');
CREATE TYPE issue_provider AS ENUM ('linear', 'jira', 'github');
CREATE TYPE media_kind AS ENUM ('screenshot', 'video', 'attachment', 'replay_blob');
CREATE TYPE replay_status AS ENUM ('recording', 'processing', 'ready', 'failed');
CREATE TYPE feedback_status AS ENUM ('under_review', 'planned', 'in_progress', 'shipped', 'wont_do');
CREATE TYPE roadmap_visibility AS ENUM ('public', 'private');
CREATE TYPE roadmap_status AS ENUM ('planned', 'in_progress', 'shipped');
CREATE TYPE conversation_status AS ENUM ('open', 'closed');
CREATE TYPE message_direction AS ENUM ('inbound', 'outbound');
CREATE TYPE audit_actor_type AS ENUM ('user', 'admin', 'system', 'api');
CREATE TYPE integration_provider AS ENUM ('linear', 'jira', 'github', 'slack', 'email');

-- Core ----------------------------------------------------------------------

CREATE TABLE projects (
    id          UUID PRIMARY KEY,
    name        VARCHAR(200) NOT NULL,
    region      region NOT NULL,
    settings    JSONB NOT NULL DEFAULT '{}',
    secret      BYTEA NOT NULL,          -- per-project HMAC secret (e.g. conversation tokens)
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id            UUID PRIMARY KEY,
    project_id    UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    key_hash      VARCHAR(255) NOT NULL,    -- bcrypt hash
    key_prefix    VARCHAR(12) NOT NULL,
    name          VARCHAR(200) NOT NULL,
    scopes        TEXT[] NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_used_at  TIMESTAMPTZ,
    expires_at    TIMESTAMPTZ,
    revoked_at    TIMESTAMPTZ,
    UNIQUE (key_prefix)
);

CREATE TABLE end_users (
    id                UUID PRIMARY KEY,
    project_id        UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    external_user_id  VARCHAR(255) NOT NULL,
    email             VARCHAR(255),
    name              VARCHAR(255),
    avatar_url        TEXT,
    traits            JSONB NOT NULL DEFAULT '{}',
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, external_user_id),
    UNIQUE (project_id, id)
);

CREATE TABLE sessions (
    id                 UUID PRIMARY KEY,
    project_id         UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id            UUID,
    started_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_seen_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    device             JSONB NOT NULL DEFAULT '{}',
    app_version        VARCHAR(100),
    environment        environment,
    ip_hash            VARCHAR(64),
    user_agent         TEXT,
    page_views         INTEGER NOT NULL DEFAULT 0,
    interaction_count  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, id),
    -- A session (device, IP hash, user agent, replays) is the person's data:
    -- erasing the end user erases it.
    FOREIGN KEY (project_id, user_id) REFERENCES end_users(project_id, id) ON DELETE CASCADE
);

CREATE TABLE interactions (
    id                     UUID PRIMARY KEY,
    project_id             UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    type                   interaction_type NOT NULL,
    source                 interaction_source,
    user_id                UUID,
    session_id             UUID,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),

    content_text           TEXT,
    content_json           JSONB NOT NULL DEFAULT '{}',

    status                 interaction_status NOT NULL DEFAULT 'new',
    severity               severity,
    tags                   TEXT[] NOT NULL DEFAULT '{}',
    assignee_id            UUID,

    linked_issue_provider  issue_provider,
    linked_issue_id        VARCHAR(255),
    linked_issue_url       TEXT,

    ai_summary             TEXT,
    ai_labels              TEXT[] NOT NULL DEFAULT '{}',
    ai_duplicate_group_id  VARCHAR(64),
    ai_confidence          FLOAT,

    privacy_scope          JSONB NOT NULL DEFAULT '{}',
    technical_context      JSONB NOT NULL DEFAULT '{}',

    search                 tsvector GENERATED ALWAYS AS (
                               to_tsvector('simple',
                                   coalesce(content_text, '') || ' ' ||
                                   coalesce(content_json->>'title', '') || ' ' ||
                                   coalesce(content_json->>'description', ''))
                           ) STORED,

    UNIQUE (project_id, id),
    FOREIGN KEY (project_id, user_id) REFERENCES end_users(project_id, id) ON DELETE CASCADE,
    -- An interaction outlives its session (e.g. a session dropped by retention);
    -- the person's interactions go through user_id.
    FOREIGN KEY (project_id, session_id) REFERENCES sessions(project_id, id) ON DELETE SET NULL (session_id)
);

CREATE TABLE media (
    id              UUID PRIMARY KEY,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    interaction_id  UUID,
    kind            media_kind NOT NULL,
    url             TEXT,
    storage_key     TEXT,
    content_type    VARCHAR(100),
    size_bytes      INTEGER,
    sha256          VARCHAR(64),
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    meta            JSONB NOT NULL DEFAULT '{}',
    -- Cascade removes the row only; the erasure job deletes the object bytes first.
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);

CREATE TABLE interaction_logs (
    id              UUID PRIMARY KEY,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    interaction_id  UUID NOT NULL,
    console         JSONB NOT NULL DEFAULT '[]',
    network         JSONB NOT NULL DEFAULT '[]',
    errors          JSONB NOT NULL DEFAULT '[]',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);

CREATE TABLE replays (
    id              UUID PRIMARY KEY,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    session_id      UUID,
    interaction_id  UUID,
    started_at      TIMESTAMPTZ,
    ended_at        TIMESTAMPTZ,
    duration        INTEGER,                 -- milliseconds
    event_count     INTEGER NOT NULL DEFAULT 0,
    status          replay_status NOT NULL DEFAULT 'recording',
    chunks          JSONB NOT NULL DEFAULT '[]',
    -- A replay is a recording of its session, so it goes with it; an attached
    -- interaction is only a pointer.
    FOREIGN KEY (project_id, session_id) REFERENCES sessions(project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE SET NULL (interaction_id)
);

-- Feedback ------------------------------------------------------------------

CREATE TABLE feedback_items (
    id                        UUID PRIMARY KEY,
    project_id                UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title                     VARCHAR(500) NOT NULL,
    description               TEXT,
    status                    feedback_status NOT NULL DEFAULT 'under_review',
    category                  VARCHAR(100),
    vote_count                INTEGER NOT NULL DEFAULT 0,
    created_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at                TIMESTAMPTZ NOT NULL DEFAULT now(),
    created_by                UUID,
    linked_interaction_count  INTEGER NOT NULL DEFAULT 0,
    UNIQUE (project_id, id)
);

CREATE TABLE feedback_votes (
    id                UUID PRIMARY KEY,
    project_id        UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    feedback_item_id  UUID NOT NULL,
    user_id           UUID,
    session_id        UUID,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (feedback_item_id, session_id),
    FOREIGN KEY (project_id, feedback_item_id) REFERENCES feedback_items(project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, user_id) REFERENCES end_users(project_id, id) ON DELETE CASCADE,
    -- Without its session a vote is anonymous but still counts toward vote_count.
    FOREIGN KEY (project_id, session_id) REFERENCES sessions(project_id, id) ON DELETE SET NULL (session_id)
);

CREATE TABLE feedback_links (
    id                UUID PRIMARY KEY,
    project_id        UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    feedback_item_id  UUID NOT NULL,
    interaction_id    UUID NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Not in the seed: makes linking idempotent and keeps linked_interaction_count honest.
    UNIQUE (feedback_item_id, interaction_id),
    FOREIGN KEY (project_id, feedback_item_id) REFERENCES feedback_items(project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);

-- Roadmap -------------------------------------------------------------------

CREATE TABLE roadmap_items (
    id                     UUID PRIMARY KEY,
    project_id             UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    title                  VARCHAR(500) NOT NULL,
    description            TEXT,
    visibility             roadmap_visibility NOT NULL DEFAULT 'public',
    status                 roadmap_status NOT NULL DEFAULT 'planned',
    sort_order             INTEGER NOT NULL DEFAULT 0,
    eta                    TIMESTAMPTZ,
    created_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at             TIMESTAMPTZ NOT NULL DEFAULT now(),
    linked_feedback_count  INTEGER NOT NULL DEFAULT 0
);

-- Surveys -------------------------------------------------------------------

CREATE TABLE surveys (
    id              UUID PRIMARY KEY,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name            VARCHAR(200) NOT NULL,
    definition      JSONB NOT NULL DEFAULT '{}',
    targeting       JSONB NOT NULL DEFAULT '{}',
    active          BOOLEAN NOT NULL DEFAULT true,
    response_count  INTEGER NOT NULL DEFAULT 0,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, id)
);

CREATE TABLE survey_responses (
    id              UUID PRIMARY KEY,
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    survey_id       UUID NOT NULL,
    interaction_id  UUID,
    responses       JSONB NOT NULL DEFAULT '{}',
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    FOREIGN KEY (project_id, survey_id) REFERENCES surveys(project_id, id) ON DELETE CASCADE,
    -- The response is the end user's words; it goes with the interaction that
    -- carries their identity.
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);

-- Chat ----------------------------------------------------------------------

CREATE TABLE conversations (
    id               UUID PRIMARY KEY,
    project_id       UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    user_id          UUID,
    session_id       UUID,
    status           conversation_status NOT NULL DEFAULT 'open',
    subject          VARCHAR(500),
    assignee_id      UUID,
    last_message_at  TIMESTAMPTZ,
    message_count    INTEGER NOT NULL DEFAULT 0,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, id),
    FOREIGN KEY (project_id, user_id) REFERENCES end_users(project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, session_id) REFERENCES sessions(project_id, id) ON DELETE SET NULL (session_id)
);

CREATE TABLE messages (
    id               UUID PRIMARY KEY,
    project_id       UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    conversation_id  UUID NOT NULL,
    direction        message_direction NOT NULL,
    body             TEXT NOT NULL,
    author_id        UUID,               -- admin user for outbound
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    read_at          TIMESTAMPTZ,
    meta             JSONB NOT NULL DEFAULT '{}',
    FOREIGN KEY (project_id, conversation_id) REFERENCES conversations(project_id, id) ON DELETE CASCADE
);

-- Audit ---------------------------------------------------------------------

CREATE TABLE audit_logs (
    id           UUID PRIMARY KEY,
    project_id   UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    actor_type   audit_actor_type NOT NULL,
    actor_id     VARCHAR(255),
    action       VARCHAR(255) NOT NULL,
    target_type  VARCHAR(100),
    target_id    VARCHAR(255),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    meta         JSONB NOT NULL DEFAULT '{}',
    ip_address   VARCHAR(45),
    user_agent   TEXT
);

-- Integrations --------------------------------------------------------------

CREATE TABLE integrations (
    id            UUID PRIMARY KEY,
    project_id    UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    provider      integration_provider NOT NULL,
    enabled       BOOLEAN NOT NULL DEFAULT true,
    config        JSONB NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    last_sync_at  TIMESTAMPTZ,
    UNIQUE (project_id, provider)
);

-- internal_id points at a row of the table named by internal_type, so it
-- cannot carry a foreign key.
CREATE TABLE integration_links (
    id             UUID PRIMARY KEY,
    project_id     UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    provider       integration_provider NOT NULL,
    external_id    VARCHAR(255) NOT NULL,
    internal_type  VARCHAR(100) NOT NULL,
    internal_id    UUID NOT NULL,
    external_url   TEXT,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Privacy -------------------------------------------------------------------

CREATE TABLE privacy_rules (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name        VARCHAR(200) NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT true,
    rule        JSONB NOT NULL DEFAULT '{}',
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Feature flags -------------------------------------------------------------

CREATE TABLE feature_flags (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    flag        VARCHAR(100) NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT false,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, flag)
);

-- Outbox --------------------------------------------------------------------

-- Follow-up work written in the same transaction as the change that causes it,
-- drained to the queue (or the router) until acknowledged.
CREATE TABLE outbox (
    id             BIGSERIAL PRIMARY KEY,
    project_id     UUID REFERENCES projects(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    payload        JSONB NOT NULL DEFAULT '{}',
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    available_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    attempts       INTEGER NOT NULL DEFAULT 0,
    last_error     TEXT,
    dispatched_at  TIMESTAMPTZ
);

-- Indexes -------------------------------------------------------------------

-- From the data model.
CREATE INDEX idx_interactions_project_type ON interactions(project_id, type);
CREATE INDEX idx_interactions_project_status ON interactions(project_id, status);
CREATE INDEX idx_interactions_project_created ON interactions(project_id, created_at);
CREATE INDEX idx_interactions_session ON interactions(session_id);
CREATE INDEX idx_interactions_duplicate ON interactions(ai_duplicate_group_id);
CREATE INDEX idx_sessions_project ON sessions(project_id);
CREATE INDEX idx_sessions_user ON sessions(user_id);
CREATE INDEX idx_media_interaction ON media(interaction_id);
CREATE INDEX idx_feedback_items_project_status ON feedback_items(project_id, status);
CREATE INDEX idx_feedback_votes_item ON feedback_votes(feedback_item_id);
CREATE INDEX idx_audit_project_created ON audit_logs(project_id, created_at);

-- Search and keyset paging.
CREATE INDEX idx_interactions_search ON interactions USING GIN (search);
CREATE INDEX idx_interactions_project_created_id ON interactions(project_id, created_at DESC, id DESC);
CREATE INDEX idx_api_keys_project ON api_keys(project_id);
CREATE INDEX idx_integration_links_internal ON integration_links(project_id, internal_type, internal_id);

-- Referencing columns not covered above, so erasure cascades and
-- per-parent listings do not scan whole tables.
CREATE INDEX idx_interactions_user ON interactions(user_id);
CREATE INDEX idx_interaction_logs_interaction ON interaction_logs(interaction_id);
CREATE INDEX idx_replays_session ON replays(session_id);
CREATE INDEX idx_replays_interaction ON replays(interaction_id);
CREATE INDEX idx_feedback_votes_user ON feedback_votes(user_id);
CREATE INDEX idx_feedback_votes_session ON feedback_votes(session_id);
CREATE INDEX idx_feedback_links_interaction ON feedback_links(interaction_id);
CREATE INDEX idx_survey_responses_survey ON survey_responses(survey_id);
CREATE INDEX idx_survey_responses_interaction ON survey_responses(interaction_id);
CREATE INDEX idx_conversations_user ON conversations(user_id);
CREATE INDEX idx_conversations_session ON conversations(session_id);
CREATE INDEX idx_messages_conversation ON messages(conversation_id, created_at);

CREATE INDEX idx_outbox_pending ON outbox(available_at, id) WHERE dispatched_at IS NULL;
