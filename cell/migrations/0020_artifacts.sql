-- Artifacts, version 20: redaction records beyond interactions, and project exports.
--
-- privacy_scope on replays, sessions and end_users holds what the project's
-- privacy rules redacted from them (replay events; user agents and device;
-- traits), in the form interactions.privacy_scope has:
--   {"redactions": {<rule id>: {"rule": <name>, "matches": n, "scopes": {<scope>: n}}}, "total": n}
-- Counts only, never a redacted value. A row written many times (a replay's
-- chunks, a session's page views, a person's traits) adds up its reports with
-- relay_merge_redactions.
--
-- Media need no new column: media.meta records what an upload's image
-- metadata held (`metadata_removed`) and the digest of the bytes as sent
-- (`received_sha256`), which tells a retried upload from a different one.

ALTER TABLE replays ADD COLUMN privacy_scope JSONB;
ALTER TABLE sessions ADD COLUMN privacy_scope JSONB;
ALTER TABLE end_users ADD COLUMN privacy_scope JSONB;

-- The sum of two redaction reports (either may be NULL): counts per rule and per scope added.
CREATE FUNCTION relay_merge_redactions(a JSONB, b JSONB) RETURNS JSONB
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN a IS NULL OR NOT (a ? 'redactions') THEN b
        WHEN b IS NULL OR NOT (b ? 'redactions') THEN a
        ELSE jsonb_build_object(
            'redactions', (
                SELECT coalesce(jsonb_object_agg(r.k, CASE
                    WHEN r.x IS NULL THEN r.y
                    WHEN r.y IS NULL THEN r.x
                    ELSE jsonb_build_object(
                        'rule', r.y -> 'rule',
                        'matches', coalesce((r.x ->> 'matches')::bigint, 0) + coalesce((r.y ->> 'matches')::bigint, 0),
                        'scopes', (
                            SELECT coalesce(jsonb_object_agg(s.n, coalesce((r.x -> 'scopes' ->> s.n)::bigint, 0)
                                                                + coalesce((r.y -> 'scopes' ->> s.n)::bigint, 0)),
                                            '{}'::jsonb)
                              FROM (SELECT jsonb_object_keys(coalesce(r.x -> 'scopes', '{}'::jsonb))
                                    UNION SELECT jsonb_object_keys(coalesce(r.y -> 'scopes', '{}'::jsonb))) AS s(n)))
                    END), '{}'::jsonb)
                  FROM (SELECT k.k, a -> 'redactions' -> k.k AS x, b -> 'redactions' -> k.k AS y
                          FROM (SELECT jsonb_object_keys(a -> 'redactions')
                                UNION SELECT jsonb_object_keys(b -> 'redactions')) AS k(k)) AS r),
            'total', coalesce((a ->> 'total')::bigint, 0) + coalesce((b ->> 'total')::bigint, 0))
    END
$$;

-- A project export (POST /v1/projects/{id}/export): the whole project as one zip
-- in this region's object store, under projects/{id}/exports/{export id}/, with
-- a manifest signed by the cell's receipt key. Built by a worker.
CREATE TABLE project_exports (
    id                    UUID PRIMARY KEY,
    project_id            UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    status                TEXT NOT NULL DEFAULT 'pending'
                              CHECK (status IN ('pending', 'running', 'ready', 'failed')),
    requested_by          TEXT NOT NULL,          -- the actor: an admin user id or a key prefix
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at            TIMESTAMPTZ,
    finished_at           TIMESTAMPTZ,
    storage_key           TEXT,                   -- the zip
    manifest_storage_key  TEXT,                   -- the signed manifest, also inside the zip
    size_bytes            BIGINT,
    sha256                VARCHAR(64),
    manifest_hash         VARCHAR(64),            -- sha256 of the manifest's canonical JSON (what is signed)
    signature             TEXT,
    public_key            TEXT,
    counts                JSONB,                  -- rows per table, objects and bytes
    failure_reason        TEXT
);

CREATE INDEX idx_project_exports_project_created ON project_exports(project_id, created_at DESC, id DESC);
