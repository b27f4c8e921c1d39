-- Deleting a project (cell side), version 19. The router's deletion
-- (router/projects/lifecycle.py) asks this cell to erase the project
-- (cell/projects/erasure.py, the same eraser a move's purge uses).
--
-- projects.state `deleting`: every request for the project is refused (404)
-- and the guard refuses writes, while its rows and objects are erased.
-- projects.erasure: the eraser's bookkeeping while it runs, so an erasure
-- interrupted at any point resumes and its receipt still counts what was there
-- when it began: {"rows": {table: n}, "objects": n, "bytes": n}. Counts only.
-- It goes with the project row, in the transaction that seals the receipt.

ALTER TABLE projects DROP CONSTRAINT projects_state_check;
ALTER TABLE projects ADD CONSTRAINT projects_state_check
    CHECK (state IN ('active', 'importing', 'copying', 'fencing', 'fenced', 'moved', 'deleting'));
ALTER TABLE projects ADD COLUMN erasure JSONB;

-- The guard of 0015, unchanged but for the message a write gets while its
-- project is being deleted.
CREATE OR REPLACE FUNCTION relay_move_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
    IF current = 'deleting' THEN
        RAISE EXCEPTION 'project % is being deleted', target.project_id USING ERRCODE = 'RL404';
    END IF;
    RAISE EXCEPTION 'project % is % for a move between regions; retry shortly', target.project_id, current
        USING ERRCODE = 'RL503';
END;
$$;
