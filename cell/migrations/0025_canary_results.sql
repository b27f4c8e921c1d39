-- Canary scan results (issue 13): `relay residency canary scan` searches every
-- region's stores for the markers `canary plant` wrote into a project, and
-- until now only printed what it found. It records each scan's verdict for a
-- project in that project's home cell, so the residency page can show the
-- compliance officer the latest results without a terminal.
--
-- One row per project per scan. It says where markers were looked for and
-- where they were found, never a marker itself: a stored marker would be found
-- "at home" by the next scan and make its control (every marker must be found
-- at home) pass whatever the real data held. `stores` lists every store the
-- scan read with its kind, region and the number of this project's markers it
-- held; `breaches` lists each marker found outside home by its slot and place
-- (table.column and row id, object key or Redis key). It is the project's
-- record, so it moves with the project and is erased with it.

CREATE TABLE canary_results (
    id             UUID PRIMARY KEY,
    project_id     UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    scanned_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    planted_at     TIMESTAMPTZ,
    ok             BOOLEAN NOT NULL,
    markers        INTEGER NOT NULL CHECK (markers >= 0),
    found_home     INTEGER NOT NULL CHECK (found_home >= 0),
    missing_slots  TEXT[] NOT NULL DEFAULT '{}',
    stores         JSONB NOT NULL DEFAULT '[]',
    breaches       JSONB NOT NULL DEFAULT '[]'
);

-- The residency page reads a project's newest results.
CREATE INDEX idx_canary_results_project ON canary_results(project_id, scanned_at DESC);
