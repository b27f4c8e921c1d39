-- Moves of projects between regions (router/moves), version 2.
--
-- One row per move, driven by the router's background driver (one driver per
-- move at a time: a session advisory lock on the move id). `state` is the
-- move's phase, mirrored in project_directory.state while it runs:
--   copying   bulk copy from the source cell to the target, ingest continuing
--   fenced    the source refuses writes; final delta, verification, activation
--   flipped   the directory routes to the target; the source is being purged
--   purged    done: the source holds nothing of the project (receipt stored)
--   aborting  given up before the flip: the source serves again, the target's
--             partial copy is being removed
--   failed    given up (last_error says why); the project never left its region
-- `progress` holds what makes each phase resumable after a crash (per-table
-- cursors and counts, object counts, verification results): ids, names and
-- numbers only, never a row's content. `receipt` is the source cell's signed
-- deletion receipt (a residency report of its hash chain).

CREATE TABLE moves (
    id            UUID PRIMARY KEY,
    project_id    UUID NOT NULL REFERENCES project_directory(id) ON DELETE CASCADE,
    from_region   TEXT NOT NULL,
    to_region     TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'copying'
                      CHECK (state IN ('copying', 'fenced', 'flipped', 'purged', 'aborting', 'failed')),
    step          TEXT NOT NULL DEFAULT 'queued',
    progress      JSONB NOT NULL DEFAULT '{}',
    start_epoch   BIGINT NOT NULL,
    fence_epoch   BIGINT,
    flip_epoch    BIGINT,
    requested_by  UUID REFERENCES admin_users(id) ON DELETE SET NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    receipt       JSONB,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    fenced_at     TIMESTAMPTZ,
    flipped_at    TIMESTAMPTZ,
    finished_at   TIMESTAMPTZ,
    CHECK (from_region <> to_region)
);

-- At most one unfinished move per project.
CREATE UNIQUE INDEX idx_moves_open ON moves(project_id) WHERE state NOT IN ('purged', 'failed');
-- A project's moves, newest first; the driver's work list.
CREATE INDEX idx_moves_project ON moves(project_id, created_at DESC);
CREATE INDEX idx_moves_unfinished ON moves(created_at) WHERE state NOT IN ('purged', 'failed');
