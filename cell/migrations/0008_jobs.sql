-- The reliable queue: which consumers of an outbox row are still unfinished,
-- one-consumer retries, the dead-letter table, and maintenance runs.
--
-- outbox.pending_jobs names the consumers the relay put on the queue and that
-- have not finished (completed, or dead-lettered) yet. A row whose jobs stay
-- unfinished long after dispatched_at (the last time it was relayed) is
-- relayed again: a no-op while the queue still holds the job, and the rescue
-- when the queue lost it (a Redis restarted without persistence). NULL means
-- the row predates this, or was finished by the API itself.
-- outbox.only_job makes a row feed one consumer only: `relay jobs retry`
-- re-enqueues a dead letter that way without running the kind's other consumers;
-- retry_of names the row it repeats, so the queued job keeps its original key
-- (`outbox:{retry_of}:{job}`), which handlers may use as an idempotency key.
ALTER TABLE outbox
    ADD COLUMN only_job      TEXT,
    ADD COLUMN retry_of      BIGINT,
    ADD COLUMN pending_jobs  TEXT[];

-- Relayed rows with unfinished jobs, stalest first.
CREATE INDEX idx_outbox_unfinished ON outbox(dispatched_at, id) WHERE pending_jobs <> '{}';
-- "Is a run of this kind already waiting for this project?" (the maintenance schedulers ask it).
CREATE INDEX idx_outbox_open_kind ON outbox(kind, project_id)
    WHERE dispatched_at IS NULL OR pending_jobs <> '{}';
-- Pruning finished rows.
CREATE INDEX idx_outbox_dispatched ON outbox(dispatched_at) WHERE dispatched_at IS NOT NULL;

-- A job that exhausted its retries (every attempt raised or ran out of time, or
-- its worker died on the last one). It keeps what a retry needs (kind,
-- payload) because the outbox row it came from may be pruned. One row per
-- (outbox row, consumer); a retry writes a fresh outbox row, so failing again
-- writes a fresh dead letter.
CREATE TABLE dead_letters (
    id               UUID PRIMARY KEY,
    project_id       UUID REFERENCES projects(id) ON DELETE CASCADE,
    outbox_id        BIGINT,
    job              TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          JSONB NOT NULL DEFAULT '{}',
    error            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    failed_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    retried_at       TIMESTAMPTZ,
    retry_outbox_id  BIGINT
);

CREATE UNIQUE INDEX idx_dead_letters_outbox_job ON dead_letters(outbox_id, job) WHERE outbox_id IS NOT NULL;
CREATE INDEX idx_dead_letters_failed ON dead_letters(failed_at DESC, id DESC);
CREATE INDEX idx_dead_letters_project ON dead_letters(project_id, failed_at);

-- One row per run of a resumable maintenance task (retention): its counts are
-- updated in the same transaction as each batch it deletes, so they are exact
-- even when the run dies half way. The run's audit entry is written when it
-- ends; a run that died is closed (and audited, marked interrupted) by the
-- next run of the same task for the project.
CREATE TABLE maintenance_runs (
    id           UUID PRIMARY KEY,
    project_id   UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    task         TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at  TIMESTAMPTZ,
    counts       JSONB NOT NULL DEFAULT '{}'
);

CREATE INDEX idx_maintenance_runs_open ON maintenance_runs(project_id, task) WHERE finished_at IS NULL;

-- Retention finds a project's sessions not seen since its cutoff.
CREATE INDEX idx_sessions_project_last_seen ON sessions(project_id, last_seen_at);
