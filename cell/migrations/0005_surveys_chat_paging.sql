-- Keyset paging for surveys, survey responses and conversations: each list's
-- ORDER BY (time desc, id desc) within a project or survey reads an index in
-- order instead of sorting every row first.

CREATE INDEX idx_surveys_project_created_id ON surveys(project_id, created_at DESC, id DESC);
CREATE INDEX idx_survey_responses_survey_created_id
    ON survey_responses(project_id, survey_id, created_at DESC, id DESC);
-- The inbox: most recent activity first (the expression is the list's sort key).
CREATE INDEX idx_conversations_project_activity_id
    ON conversations(project_id, (coalesce(last_message_at, created_at)) DESC, id DESC);
CREATE INDEX idx_conversations_project_created_id ON conversations(project_id, created_at DESC, id DESC);
