"""The migration runner against a real Postgres: idempotent, ordered, and strict about history."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.migrate import MigrationError, load, migrate, status
from relay.cli import MIGRATIONS
from tests.conftest import sql
from tests.services import StorePostgres


def test_applies_once_and_refuses_edited_files(pg: StorePostgres, tmp_path: Path) -> None:
    dsn = pg.database("migrate")
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (id int);")
    (tmp_path / "0002_second.sql").write_text("CREATE TABLE b (id int);")
    assert asyncio.run(migrate(dsn, tmp_path)) == ["0001_first.sql", "0002_second.sql"]
    assert asyncio.run(migrate(dsn, tmp_path)) == []
    assert asyncio.run(status(dsn, tmp_path)) == [("0001_first.sql", True), ("0002_second.sql", True)]
    (tmp_path / "0001_first.sql").write_text("CREATE TABLE a (id bigint);")
    with pytest.raises(MigrationError, match="edited"):
        asyncio.run(migrate(dsn, tmp_path))


def test_a_failing_file_leaves_nothing_behind(pg: StorePostgres, tmp_path: Path) -> None:
    dsn = pg.database("migrate_fail")
    (tmp_path / "0001_ok.sql").write_text("CREATE TABLE ok (id int);")
    (tmp_path / "0002_bad.sql").write_text("CREATE TABLE half (id int); SELECT no_such_function();")
    with pytest.raises(Exception, match="no_such_function"):
        asyncio.run(migrate(dsn, tmp_path))
    assert not sql(dsn, "SELECT 1 FROM pg_tables WHERE tablename = 'half'")
    assert [r["version"] for r in sql(dsn, "SELECT version FROM schema_migrations")] == [1]


def test_concurrent_starters_take_turns(pg: StorePostgres) -> None:
    dsn = pg.database("migrate_race")

    async def both() -> list[list[str]]:
        return list(await asyncio.gather(migrate(dsn, MIGRATIONS["cell"]), migrate(dsn, MIGRATIONS["cell"])))

    results = asyncio.run(both())
    assert sorted(map(len, results)) == [0, len(load(MIGRATIONS["cell"]))]


def test_file_names_are_checked(tmp_path: Path) -> None:
    (tmp_path / "1_bad.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN"):
        load(tmp_path)


def test_cell_schema_has_the_whole_data_model(pg: StorePostgres) -> None:
    dsn = pg.migrated("schema", "cell")
    tables = {r["tablename"] for r in sql(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert tables >= {
        "projects", "api_keys", "end_users", "sessions", "interactions", "media", "interaction_logs", "replays",
        "feedback_items", "feedback_votes", "feedback_links", "roadmap_items", "surveys", "survey_responses",
        "conversations", "messages", "audit_logs", "integrations", "integration_links", "privacy_rules",
        "feature_flags", "outbox"}
    indexes = {r["indexname"] for r in sql(dsn, "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert indexes >= {
        "idx_interactions_project_type", "idx_interactions_project_status", "idx_interactions_project_created",
        "idx_interactions_session", "idx_interactions_duplicate", "idx_sessions_project", "idx_sessions_user",
        "idx_media_interaction", "idx_feedback_items_project_status", "idx_feedback_votes_item",
        "idx_audit_project_created"}
    enums = {r["typname"] for r in sql(dsn, "SELECT typname FROM pg_type WHERE typtype = 'e'")}
    assert enums >= {"region", "environment", "interaction_type", "interaction_source", "interaction_status",
                     "severity", "media_kind", "replay_status", "feedback_status", "roadmap_visibility",
                     "roadmap_status", "conversation_status", "message_direction", "audit_actor_type",
                     "integration_provider"}
    tenant = {r["table_name"] for r in sql(
        dsn, "SELECT table_name FROM information_schema.columns WHERE column_name = 'project_id'"
             " AND table_schema = 'public'")}
    # Tables of the cell itself, not of a tenant: the cell's own residency reports.
    cell_level = {"projects", "schema_migrations", "residency_reports", "moved_projects"}
    assert tables - cell_level <= tenant, tables - cell_level - tenant
    router = pg.migrated("schema_router", "router")
    control = {r["tablename"] for r in sql(router, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert control >= {"admin_users", "project_memberships", "project_directory", "key_directory", "outbox",
                       "admin_sessions"}
