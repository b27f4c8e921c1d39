-- Media and replays: what their list endpoints page over.
--
-- Replays had no creation time, so they could not be listed newest first with
-- the (created_at, id) keyset cursors every other list uses.
ALTER TABLE replays ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
CREATE INDEX idx_replays_project_created_id ON replays(project_id, created_at DESC, id DESC);

-- An interaction's media, newest first, without a sort.
CREATE INDEX idx_media_project_interaction_created
    ON media(project_id, interaction_id, created_at DESC, id DESC);
