-- Integration sync, version 11: issues filed in Linear, Jira and GitHub from
-- interactions, and their state synced back by the providers' webhooks.
--
-- integration_issue_requests is the work list and the crash journal of the
-- `integration.create_issue` job, one row per (interaction, provider).
-- `started_at` is set (and committed) BEFORE a worker calls the provider, and
-- `external_id`/`external_url` are committed the moment the provider answers,
-- before the interaction and integration_links are written. A retry that finds
-- `started_at` set but no `external_id` knows an earlier attempt may have
-- created the issue and looks for it at the provider before creating another.
-- `last_error` holds Relay's own description of the last failure (a status
-- code, never a provider's message, a token or user content).

CREATE TABLE integration_issue_requests (
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    interaction_id  UUID NOT NULL,
    provider        issue_provider NOT NULL,
    requested_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at      TIMESTAMPTZ,
    external_id     VARCHAR(255),
    external_url    TEXT,
    completed_at    TIMESTAMPTZ,
    last_error      TEXT,
    PRIMARY KEY (project_id, interaction_id, provider),
    -- Erasing the interaction (or the person who sent it) takes its requests with it.
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);

-- The issue's state as its provider last reported it, so a webhook delivered
-- twice (or a close repeated by the provider) changes and notifies once:
-- the sync updates the row only when the state differs.
ALTER TABLE integration_links
    ADD COLUMN external_state TEXT CHECK (external_state IN ('open', 'closed')),
    ADD COLUMN state_changed_at TIMESTAMPTZ;

-- A provider's webhook names an issue by its id: find the project's links to
-- it, and never write the same link twice.
CREATE UNIQUE INDEX idx_integration_links_external
    ON integration_links(project_id, provider, external_id, internal_type, internal_id);
