-- Privacy rules and feature flags are read per project: ingest loads a project's
-- enabled rules (cached a few seconds per process), the dashboard lists both
-- newest first with keyset cursors over (created_at, id).
CREATE INDEX idx_privacy_rules_project_created ON privacy_rules (project_id, created_at DESC, id DESC);
CREATE INDEX idx_feature_flags_project_created ON feature_flags (project_id, created_at DESC, id DESC);
