-- Outbound webhooks (Standard Webhooks) and their deliveries; indexes for the
-- audit log listing's filters.
--
-- webhooks.secret is the `whsec_` signing secret sealed by cell/secrets.py
-- (AES-GCM, bound to the project and the webhook id): a dump shows no secret.
-- webhook_deliveries is the delivery worker's work list: a row is written
-- `pending` with next_attempt_at in the same transaction as the event (or the
-- test request) and moves to `delivered`, or `failed` once retries are spent.

CREATE TABLE webhooks (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    url         TEXT NOT NULL,
    events      TEXT[] NOT NULL DEFAULT '{}',
    secret      TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL DEFAULT true,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (project_id, id)
);

CREATE TABLE webhook_deliveries (
    id                UUID PRIMARY KEY,
    project_id        UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    webhook_id        UUID NOT NULL,
    event             TEXT NOT NULL,
    payload           JSONB NOT NULL DEFAULT '{}',
    status            TEXT NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   TIMESTAMPTZ DEFAULT now(),
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at      TIMESTAMPTZ,
    FOREIGN KEY (project_id, webhook_id) REFERENCES webhooks(project_id, id) ON DELETE CASCADE
);

-- Listing a project's webhooks, and fanning an event out to its enabled ones.
CREATE INDEX idx_webhooks_project ON webhooks(project_id, created_at DESC, id DESC);
-- The delivery worker's queue: due pending deliveries, oldest first.
CREATE INDEX idx_webhook_deliveries_due ON webhook_deliveries(next_attempt_at, id) WHERE status = 'pending';
-- A webhook's delivery history (and the cascade when it is deleted).
CREATE INDEX idx_webhook_deliveries_webhook ON webhook_deliveries(webhook_id, created_at DESC, id DESC);

-- Audit log listing: keyset order, and the "history of this thing" / "what did this actor do" filters.
CREATE INDEX idx_audit_project_created_id ON audit_logs(project_id, created_at DESC, id DESC);
CREATE INDEX idx_audit_project_target ON audit_logs(project_id, target_type, target_id, created_at DESC);
CREATE INDEX idx_audit_project_actor ON audit_logs(project_id, actor_id, created_at DESC);
