-- Keyset paging of sessions and end users (newest first), and the end-user
-- search by external id or email prefix (`q`), without scanning the project.

CREATE INDEX idx_sessions_project_started_id ON sessions(project_id, started_at DESC, id DESC);
CREATE INDEX idx_end_users_project_created_id ON end_users(project_id, created_at DESC, id DESC);
CREATE INDEX idx_end_users_external_prefix ON end_users(project_id, external_user_id text_pattern_ops);
CREATE INDEX idx_end_users_email_prefix ON end_users(project_id, lower(email) text_pattern_ops);
