-- Feedback board and roadmap, version 4: which feedback items a roadmap item
-- answers (roadmap_items.linked_feedback_count counts them), and the indexes
-- behind the board's and the roadmap's keyset paging.

-- roadmap_items lacked the (project_id, id) key that composite references need.
ALTER TABLE roadmap_items ADD CONSTRAINT roadmap_items_project_id_id_key UNIQUE (project_id, id);

CREATE TABLE roadmap_feedback_links (
    id                UUID PRIMARY KEY,
    project_id        UUID NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    roadmap_item_id   UUID NOT NULL,
    feedback_item_id  UUID NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Makes linking idempotent and keeps linked_feedback_count honest.
    UNIQUE (roadmap_item_id, feedback_item_id),
    FOREIGN KEY (project_id, roadmap_item_id) REFERENCES roadmap_items(project_id, id) ON DELETE CASCADE,
    FOREIGN KEY (project_id, feedback_item_id) REFERENCES feedback_items(project_id, id) ON DELETE CASCADE
);

CREATE INDEX idx_roadmap_feedback_links_feedback ON roadmap_feedback_links(feedback_item_id);

-- Keyset paging: the board by votes or newest, votes and links per item, the roadmap by its order.
CREATE INDEX idx_feedback_items_project_created_id ON feedback_items(project_id, created_at DESC, id DESC);
CREATE INDEX idx_feedback_items_project_votes_id ON feedback_items(project_id, vote_count DESC, id DESC);
CREATE INDEX idx_feedback_votes_item_created_id ON feedback_votes(feedback_item_id, created_at DESC, id DESC);
CREATE INDEX idx_feedback_links_item_created_id ON feedback_links(feedback_item_id, created_at DESC, id DESC);
CREATE INDEX idx_roadmap_items_project_order ON roadmap_items(project_id, sort_order, id);
