-- AI enrichment: what the enrichment job keeps per interaction to compare later
-- ones with it (cell/enrichment/).
--
-- One row per enriched interaction, written in the same transaction that fills
-- the interaction's ai_* fields, so "has a signature" means "is enriched" (the
-- job's idempotency check). `terms` are the weighted, normalised terms of the
-- interaction's words, `log_terms` those of its errors and failed requests;
-- `keys` both as an array for the inverted-index lookup of older interactions
-- sharing any of them; `embedding` what an external provider returned, if one
-- is configured.
-- They are derived from the interaction's (already scrubbed) content, so they
-- go with it: the composite foreign key cascades an interaction's deletion
-- (erasure, retention, a project purge) to its signature.
--
-- group_id mirrors interactions.ai_duplicate_group_id, so grouping reads one
-- table; both change together when two groups merge.

CREATE TABLE enrichment_signatures (
    project_id       UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    interaction_id   UUID NOT NULL,
    group_id         VARCHAR(64) NOT NULL,
    method           VARCHAR(40) NOT NULL,
    terms            JSONB NOT NULL DEFAULT '{}',
    log_terms        JSONB NOT NULL DEFAULT '{}',
    keys             TEXT[] NOT NULL DEFAULT '{}',
    embedding        REAL[],
    embedding_model  VARCHAR(200),
    created_at       TIMESTAMPTZ NOT NULL,
    enriched_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, interaction_id),
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);

-- The project's most recent interactions: the comparison set and its document frequencies.
CREATE INDEX idx_enrichment_signatures_recent ON enrichment_signatures(project_id, created_at DESC);
-- Older interactions sharing a rare term with a new one.
CREATE INDEX idx_enrichment_signatures_keys ON enrichment_signatures USING GIN (keys);
-- Renaming a group on a merge.
CREATE INDEX idx_enrichment_signatures_group ON enrichment_signatures(project_id, group_id);
-- `GET interactions?duplicate_group=` within a project.
CREATE INDEX idx_interactions_project_duplicate ON interactions(project_id, ai_duplicate_group_id, created_at DESC)
    WHERE ai_duplicate_group_id IS NOT NULL;
