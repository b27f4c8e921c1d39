-- Moving a project between regions (cell side), version 15. The router drives
-- a move (router/moves); this cell is its source or its target (cell/moves).
--
-- projects.state: where the project stands, as this cell sees it.
--   active     served here; the only state most projects ever have
--   importing  a move's target: rows and objects are arriving; not served yet
--   copying    a move's source while it is copied out: served as usual, and
--              every row change is logged in move_changes (ids only)
--   fencing    the API refuses writes (503 + Retry-After) while requests that
--              were already admitted finish; changes are still logged
--   fenced     the database refuses writes too: what is here is final
--   moved      served elsewhere (moved_projects says where); purge follows
-- projects.epoch: the project's routing epoch in the router's directory,
-- raised at the fence and at the flip. A request signed with an older epoch
-- is answered 421, so a router with a stale map cannot write here.

ALTER TABLE projects
    ADD COLUMN state TEXT NOT NULL DEFAULT 'active'
        CHECK (state IN ('active', 'importing', 'copying', 'fencing', 'fenced', 'moved')),
    ADD COLUMN epoch BIGINT NOT NULL DEFAULT 1;

-- The tombstone of a project that moved away and was purged: lets this cell
-- answer 421 with the project's new region instead of a bare 401/404. It holds
-- the project id and a region name, no customer data, and is the cell's own
-- record (like residency_reports), so a purge leaves it behind on purpose.
CREATE TABLE moved_projects (
    project_id  UUID PRIMARY KEY,
    region      TEXT NOT NULL,
    epoch       BIGINT NOT NULL,
    moved_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Change capture while a project is copied out: which row (table and primary
-- key) changed, never what it holds. The move re-reads each logged row from
-- its table (absent: deleted) and applies it to the target, then removes the
-- entry; this is how updates and deletes made during the bulk copy, and the
-- final delta after the fence, reach the target exactly.
CREATE TABLE move_changes (
    seq         BIGSERIAL PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    table_name  TEXT NOT NULL,
    pk          JSONB NOT NULL
);

CREATE INDEX idx_move_changes_project ON move_changes(project_id, seq);

-- The guard on every tenant table (attached by cell/moves/schema.py when a
-- move begins, with the table's primary-key columns as arguments, so tables
-- added later are covered without a migration listing them):
-- - active (or no such project): nothing to do;
-- - copying/fencing: log the row's key in move_changes;
-- - fenced/moved/importing: refuse the write (SQLSTATE RL503).
-- It locks the project row FOR KEY SHARE, which the state changes of a move
-- wait for (they take FOR UPDATE): every write that passed the guard before a
-- state change has committed when the change commits, and none passes after
-- it without seeing the new state. A move's own statements set
-- `relay.move = on` for their transaction and pass untouched.
CREATE FUNCTION relay_move_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target   record;
    current  text;
    data     jsonb;
    pk       jsonb := '[]'::jsonb;
    col      text;
BEGIN
    IF TG_OP = 'DELETE' THEN
        target := OLD;
    ELSE
        target := NEW;
    END IF;
    IF current_setting('relay.move', true) = 'on' THEN
        RETURN target;
    END IF;
    SELECT p.state INTO current FROM projects p WHERE p.id = target.project_id FOR KEY SHARE;
    IF current IS NULL OR current = 'active' THEN
        RETURN target;
    END IF;
    IF current IN ('copying', 'fencing') THEN
        data := to_jsonb(target);
        FOREACH col IN ARRAY TG_ARGV LOOP
            pk := pk || jsonb_build_array(data -> col);
        END LOOP;
        INSERT INTO move_changes (project_id, table_name, pk) VALUES (target.project_id, TG_TABLE_NAME, pk);
        RETURN target;
    END IF;
    RAISE EXCEPTION 'project % is % for a move between regions; retry shortly', target.project_id, current
        USING ERRCODE = 'RL503';
END;
$$;
