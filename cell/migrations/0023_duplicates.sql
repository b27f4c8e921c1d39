-- Duplicates people can trust (issue 15): a similarity index over the
-- interactions' sentence embeddings, a person's confirmation of a group, the
-- suggestions a person dismissed, and which method wrote the ai_* fields.
--
-- interaction_vectors holds one unit vector per enriched interaction (of the
-- model named in `model`), written by the enrichment job in the transaction
-- that fills the interaction's ai_* fields. Where the server offers pgvector
-- (the pgserver wheel `relay dev` uses ships it; managed Postgres offers it),
-- vectors of the local model's 384 dimensions go to `embedding`, under an HNSW
-- index, and `GET …/similar` asks that index; elsewhere (a Postgres without
-- the extension) they go to `unit` (float32, little-endian) and the cell scans
-- the project's newest vectors exactly. The cell reads which of the two this
-- database has at start (cell/enrichment/index.py), so this file succeeds on
-- both kinds of server. They derive from the interaction's words, so they go
-- with it: the foreign key cascades erasure, retention and purges.
--
-- duplicate_confirmed: a person put this interaction in its group
-- (`POST …/duplicate-of`); close-the-loop notifications follow only such
-- groups. ai_method: which method wrote ai_summary, ai_labels and the group
-- (`{"summary": …, "labels": …, "grouping": …}`), so a reader can tell a
-- language model's summary from an extract, and a calibrated cut from an old one.
--
-- duplicate_dismissals: pairs a person said are not duplicates (a dismissed
-- suggestion, or an interaction taken out of a group); they are never
-- suggested again and never grouped by the workers. Stored once per pair,
-- smaller id first.

ALTER TABLE interactions ADD COLUMN duplicate_confirmed BOOLEAN NOT NULL DEFAULT false;
ALTER TABLE interactions ADD COLUMN ai_method JSONB;

CREATE TABLE interaction_vectors (
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    interaction_id  UUID NOT NULL,
    model           VARCHAR(200) NOT NULL,
    unit            BYTEA,
    created_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, interaction_id),
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);
-- The exact scan: a project's newest vectors of one model.
CREATE INDEX idx_interaction_vectors_recent ON interaction_vectors(project_id, model, created_at DESC);

CREATE TABLE duplicate_dismissals (
    project_id      UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    interaction_id  UUID NOT NULL,
    other_id        UUID NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, interaction_id, other_id),
    CHECK (interaction_id < other_id),
    FOREIGN KEY (project_id, interaction_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, other_id) REFERENCES interactions(project_id, id) ON DELETE CASCADE
);
CREATE INDEX idx_duplicate_dismissals_other ON duplicate_dismissals(project_id, other_id);

-- pgvector where the server has it and lets us install it; nothing otherwise.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') THEN
        RAISE NOTICE 'pgvector is not available: similar interactions are found by an exact scan';
        RETURN;
    END IF;
    BEGIN
        CREATE EXTENSION IF NOT EXISTS vector;
    EXCEPTION WHEN insufficient_privilege THEN
        RAISE NOTICE 'pgvector may not be installed by this role: similar interactions are found by an exact scan';
        RETURN;
    END;
    EXECUTE 'ALTER TABLE interaction_vectors ADD COLUMN embedding vector(384)';
    EXECUTE 'CREATE INDEX idx_interaction_vectors_hnsw ON interaction_vectors
                 USING hnsw (embedding vector_ip_ops) WHERE embedding IS NOT NULL';
END
$$;
