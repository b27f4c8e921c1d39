"""The cell's reliable queue and its maintenance jobs, end to end.

Data goes in through the router as SDKs and the dashboard put it; the operator acts through the `relay jobs`
CLI (a subprocess, against relay dev's state dir), and effects are read back through the router. Faults need a
private topology: the region's Redis stopped during ingest, and the region's worker killed in the middle of a
job.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import asyncpg
import httpx
import pytest

from cell.jobs import registry
from common.ids import uuid7
from relay.devstack import ROOT, DevStack
from tests.conftest import Admin, Stack, sql, until
from tests.services import StorePostgres

REGION = "eu-west"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


# Helpers --------------------------------------------------------------------------------------------------------



def _db(topo: dict[str, Any]) -> str:
    return str(topo["cells"][REGION]["database_url"])


def _objects(topo: dict[str, Any]) -> Path:
    return Path(urlparse(topo["cells"][REGION]["object_store"]).path)


def _cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`relay jobs …` as an operator runs it, against relay dev's topology."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run([sys.executable, "-m", "relay", "jobs", *args, "--state-dir", str(state_dir)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=60, check=False)


def _run(state_dir: Path, task: str, project_id: str) -> int:
    """Trigger a maintenance job for a project; the outbox row's id."""
    done = _cli(state_dir, "run", task, "--project", project_id)
    assert done.returncode == 0, done.stderr
    assert f"enqueued in {REGION} as outbox row" in done.stdout, done.stdout
    return int(done.stdout.strip().rsplit(" ", 1)[1])


def _finished(dsn: str, outbox_id: int) -> bool:
    """Whether every job of an outbox row has finished (completed or dead-lettered)."""
    rows = sql(dsn, "SELECT pending_jobs = '{}' AS done FROM outbox WHERE id = $1", outbox_id)
    return bool(rows and rows[0]["done"])


def _settled(dsn: str, project_id: str, after: int = 0) -> bool:
    """Whether the worker finished every job of the project's outbox rows (after row `after`) that this
    version has a consumer for: the other areas' jobs on ingest (enrichment, webhooks …) are done."""
    known = sorted({j.kind for j in registry()[0].values()})
    rows = sql(dsn, """SELECT 1 FROM outbox WHERE project_id = $1 AND id > $2 AND kind = ANY($3::text[])
                          AND (dispatched_at IS NULL OR pending_jobs <> '{}') LIMIT 1""",
               uuid.UUID(project_id), after, known)
    return not rows


class Held:
    """A transaction held open on its own connection, as a slow request would hold its row locks."""

    def __init__(self, dsn: str, query: str, *args: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(dsn))
        self.tx = self.conn.transaction()
        self.loop.run_until_complete(self.tx.start())
        self.loop.run_until_complete(self.conn.execute(query, *args))

    def release(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self.tx.rollback())
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


class Project:
    """A fresh eu-west project with an ingest key, and the calls the tests make as its SDK and its admin."""

    def __init__(self, router: httpx.Client, admin: Admin) -> None:
        self.router = router
        self.admin = admin
        self.project = admin.project(REGION)
        self.id = str(self.project["id"])
        self.base = f"/v1/projects/{self.id}"
        self.ingest = admin.key(self.project, ["ingest"])["h"]

    def post(self, path: str, body: Any, status: int = 201, **kwargs: Any) -> dict[str, Any]:
        headers = self.ingest if path.startswith("/v1/ingest") else self.admin.h
        r = self.router.post(path, json=body, headers=headers, **kwargs)
        assert r.status_code == status, r.text
        return dict(r.json())

    def get(self, path: str, status: int = 200) -> dict[str, Any]:
        r = self.router.get(self.base + path, headers=self.admin.h)
        assert r.status_code == status, (path, r.text)
        return dict(r.json())

    def session(self) -> str:
        return str(self.post("/v1/ingest/sessions", {})["id"])

    def interaction(self, session_id: str | None = None, text: str = "the export button does nothing") -> str:
        body: dict[str, Any] = {"type": "bug", "content": {"text": text}}
        if session_id:
            body["session_id"] = session_id
        return str(self.post("/v1/ingest/interactions", body)["id"])

    def screenshot(self, interaction_id: str) -> str:
        r = self.router.post(f"/v1/ingest/interactions/{interaction_id}/media", params={"kind": "screenshot"},
                             content=PNG, headers={**self.ingest, "Content-Type": "image/png"})
        assert r.status_code == 201, r.text
        return f"projects/{self.id}/media/{r.json()['id']}"

    def replay_chunk(self, session_id: str, interaction_id: str | None = None) -> tuple[str, str]:
        replay_id = str(uuid7())
        params = {"session_id": session_id, **({"interaction_id": interaction_id} if interaction_id else {})}
        events = [{"type": 3, "timestamp": 1_700_000_000_000 + i, "data": {"source": 1}} for i in range(3)]
        r = self.router.post(f"/v1/ingest/replays/{replay_id}/chunks/0", params=params, content=json.dumps(events),
                             headers={**self.ingest, "Content-Type": "application/json"})
        assert r.status_code == 201, r.text
        return replay_id, str(r.json()["chunk"]["storageKey"])

    def feedback_item(self) -> str:
        return str(self.post(f"{self.base}/feedback-items", {"title": f"item {uuid7()}"})["id"])

    def audit(self, action: str) -> list[dict[str, Any]]:
        r = self.router.get(f"{self.base}/audit-logs", params={"action": action}, headers=self.admin.h)
        assert r.status_code == 200, r.text
        return list(r.json()["data"])


# Counters --------------------------------------------------------------------------------------------------------


def test_drifted_counters_are_repaired_and_right_rows_left_alone(router: httpx.Client, admin: Admin,
                                                                   topo: dict[str, Any], stack: DevStack) -> None:
    p = Project(router, admin)
    dsn = _db(topo)
    s = p.session()
    i1, _ = p.interaction(s), p.interaction(s)
    drifted, right = p.feedback_item(), p.feedback_item()
    for item in (drifted, right):
        p.post(f"/v1/ingest/feedback-items/{item}/votes", {"session_id": s})
    p.post(f"{p.base}/feedback-items/{drifted}/links", {"interaction_id": i1})
    survey = p.post(f"{p.base}/surveys", {"definition": {"type": "nps", "title": "NPS", "questions": [
        {"id": "nps", "type": "nps", "text": "Recommend us?", "required": True}]}})["id"]
    p.post(f"/v1/ingest/surveys/{survey}/responses", {"session_id": s, "responses": {"nps": 9}})
    chat = p.post("/v1/ingest/conversations", {"session_id": s, "body": "hello"})["id"]
    p.post(f"{p.base}/conversations/{chat}/messages", {"body": "hi, how can we help?"})
    roadmap = p.post(f"{p.base}/roadmap-items", {"title": "Dark mode"})["id"]
    p.post(f"{p.base}/roadmap-items/{roadmap}/feedback", {"feedback_item_id": drifted})
    last_message = p.get(f"/conversations/{chat}")["last_message_at"]

    # Drift, as a bug or a hand-made fix in SQL would leave it.
    sql(dsn, "UPDATE feedback_items SET vote_count = 7, linked_interaction_count = 0 WHERE id = $1",
        uuid.UUID(drifted))
    sql(dsn, "UPDATE surveys SET response_count = 5 WHERE id = $1", uuid.UUID(survey))
    sql(dsn, "UPDATE conversations SET message_count = 9, last_message_at = now() - interval '1 day' WHERE id = $1",
        uuid.UUID(chat))
    sql(dsn, "UPDATE roadmap_items SET linked_feedback_count = 3 WHERE id = $1", uuid.UUID(roadmap))
    sql(dsn, "UPDATE sessions SET interaction_count = 0 WHERE id = $1", uuid.UUID(s))
    untouched = sql(dsn, "SELECT xmin::text AS v FROM feedback_items WHERE id = $1", uuid.UUID(right))[0]["v"]

    outbox_id = _run(stack.state_dir, "reconcile", p.id)
    until(lambda: _finished(dsn, outbox_id), what="reconcile job")
    item = p.get(f"/feedback-items/{drifted}")
    assert (item["vote_count"], item["linked_interaction_count"]) == (1, 1)
    assert p.get(f"/surveys/{survey}")["response_count"] == 1
    conversation = p.get(f"/conversations/{chat}")
    assert (conversation["message_count"], conversation["last_message_at"]) == (2, last_message)
    assert p.get(f"/roadmap-items/{roadmap}")["linked_feedback_count"] == 1
    assert p.get(f"/sessions/{s}")["interaction_count"] == 4  # two bugs, the survey answer, the chat
    # The row that was right was not written at all.
    assert sql(dsn, "SELECT xmin::text AS v FROM feedback_items WHERE id = $1", uuid.UUID(right))[0]["v"] == untouched
    [entry] = p.audit("counters.repaired")
    assert entry["actor_type"] == "system" and entry["meta"]["rows"] == {
        "feedback_items.vote_count": 1, "feedback_items.linked_interaction_count": 1, "surveys.response_count": 1,
        "conversations.message_count": 1, "roadmap_items.linked_feedback_count": 1, "sessions.interaction_count": 1}
    # Once more: nothing to repair, nothing written, no new audit entry.
    again = _run(stack.state_dir, "reconcile", p.id)
    until(lambda: _finished(dsn, again), what="second reconcile")
    assert len(p.audit("counters.repaired")) == 1
    assert sql(dsn, "SELECT xmin::text AS v FROM feedback_items WHERE id = $1", uuid.UUID(right))[0]["v"] == untouched

    # The operator's mistakes are reported, not enqueued.
    unknown = _cli(stack.state_dir, "run", "reconcile", "--project", str(uuid7()))
    assert unknown.returncode == 1 and "no project" in unknown.stderr
    bad = _cli(stack.state_dir, "run", "reconcile", "--project", "nope")
    assert bad.returncode == 1 and "not a UUID" in bad.stderr
    wrong = _cli(stack.state_dir, "run", "reconcile", "--project", p.id, "--region", "mars")
    assert wrong.returncode == 1 and "no region 'mars'" in wrong.stderr


# Dead letters ----------------------------------------------------------------------------------------------------


def test_a_job_that_keeps_failing_is_dead_lettered_and_an_operator_retries_it(
        router: httpx.Client, admin: Admin, topo: dict[str, Any], stack: DevStack) -> None:
    p = Project(router, admin)
    dsn = _db(topo)
    item = p.feedback_item()
    sql(dsn, "UPDATE feedback_items SET vote_count = 5 WHERE id = $1", uuid.UUID(item))
    # A long transaction holds the row: reconcile waits 2 s for it per attempt, fails, retries with backoff.
    held = Held(dsn, "SELECT 1 FROM feedback_items WHERE id = $1 FOR UPDATE", uuid.UUID(item))
    try:
        outbox_id = _run(stack.state_dir, "reconcile", p.id)
        letter = until(lambda: sql(dsn, "SELECT * FROM dead_letters WHERE outbox_id = $1", outbox_id), 90,
                        "dead letter")[0]
    finally:
        held.release()
    assert (letter["job"], letter["kind"], letter["attempts"]) == ("maintenance.reconcile", "maintenance.reconcile", 3)
    assert str(letter["project_id"]) == p.id and json.loads(letter["payload"]) == {"project_id": p.id}
    assert "LockNotAvailableError" in letter["error"] and letter["retried_at"] is None
    assert _finished(dsn, outbox_id)  # nothing left pending: the failure is final, and recorded
    assert p.get(f"/feedback-items/{item}")["vote_count"] == 5  # no effect

    # The operator sees it, in a table and as JSON.
    table = _cli(stack.state_dir, "dead", "--region", REGION)
    assert table.returncode == 0 and str(letter["id"]) in table.stdout and "LockNotAvailableError" in table.stdout
    listed = _cli(stack.state_dir, "dead", "--json")
    assert listed.returncode == 0, listed.stderr
    [mine] = [d for d in json.loads(listed.stdout) if d["id"] == str(letter["id"])]
    assert (mine["region"], mine["job"], mine["attempts"], mine["project_id"]) == (
        REGION, "maintenance.reconcile", 3, p.id)
    assert mine["outbox_id"] == outbox_id and mine["retried_at"] is None

    # The cause is gone: a retry runs it again, once, for that one consumer.
    retried = _cli(stack.state_dir, "retry", str(letter["id"]))
    assert retried.returncode == 0, retried.stderr
    assert f"re-enqueued in {REGION}" in retried.stdout
    retry_id = int(retried.stdout.strip().rsplit(" ", 1)[1])
    until(lambda: p.get(f"/feedback-items/{item}")["vote_count"] == 0, 60, "the retried job's effect")
    until(lambda: _finished(dsn, retry_id), what="retried job")
    [row] = sql(dsn, "SELECT only_job, retry_of FROM outbox WHERE id = $1", retry_id)
    assert (row["only_job"], row["retry_of"]) == ("maintenance.reconcile", outbox_id)
    assert not sql(dsn, "SELECT 1 FROM dead_letters WHERE outbox_id = $1", retry_id)
    after = json.loads(_cli(stack.state_dir, "dead", "--json").stdout)
    assert str(letter["id"]) not in [d["id"] for d in after]
    [shown] = [d for d in json.loads(_cli(stack.state_dir, "dead", "--json", "--all").stdout)
               if d["id"] == str(letter["id"])]
    assert shown["retried_at"] is not None and shown["retry_outbox_id"] == retry_id
    # Once only; an unknown id is an error.
    twice = _cli(stack.state_dir, "retry", str(letter["id"]))
    assert twice.returncode == 1 and "already retried" in twice.stderr
    unknown = _cli(stack.state_dir, "retry", str(uuid7()), "--region", REGION)
    assert unknown.returncode == 1 and "no dead letter" in unknown.stderr


# Retention -------------------------------------------------------------------------------------------------------


def _age(dsn: str, table: str, column: str, ids: list[str], days: int = 40) -> None:
    sql(dsn, f"UPDATE {table} SET {column} = now() - make_interval(days => $2) WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i) for i in ids], days)


def test_retention_deletes_only_old_data_and_its_objects(router: httpx.Client, admin: Admin, topo: dict[str, Any],
                                                         stack: DevStack) -> None:
    p = Project(router, admin)
    dsn, objects = _db(topo), _objects(topo)
    old_s, new_s = p.session(), p.session()
    # Old: a bug with a screenshot and a replay, a bug linked to a feedback item, a survey answer, a chat.
    old_bug = p.interaction(old_s)
    old_shot = p.screenshot(old_bug)
    old_replay, old_chunk = p.replay_chunk(old_s, old_bug)
    old_linked = p.interaction(old_s)
    item = p.feedback_item()
    p.post(f"{p.base}/feedback-items/{item}/links", {"interaction_id": old_linked})
    survey = p.post(f"{p.base}/surveys", {"definition": {"type": "nps", "title": "NPS", "questions": [
        {"id": "nps", "type": "nps", "text": "Recommend us?", "required": True}]}})["id"]
    p.post(f"/v1/ingest/surveys/{survey}/responses", {"session_id": old_s, "responses": {"nps": 3}})
    old_chat = p.post("/v1/ingest/conversations", {"session_id": old_s, "body": "old question"})["id"]
    # A replay recorded long ago in a session still in use.
    stale_replay, stale_chunk = p.replay_chunk(new_s)
    # New: the same kinds of things, all kept.
    new_bug = p.interaction(new_s)
    new_shot = p.screenshot(new_bug)
    new_replay, new_chunk = p.replay_chunk(new_s, new_bug)
    p.post(f"/v1/ingest/surveys/{survey}/responses", {"session_id": new_s, "responses": {"nps": 10}})
    new_chat = p.post("/v1/ingest/conversations", {"session_id": new_s, "body": "new question"})["id"]
    pid = uuid.UUID(p.id)
    old_interactions = [str(r["id"]) for r in sql(
        dsn, "SELECT id FROM interactions WHERE project_id = $1 AND session_id = $2", pid, uuid.UUID(old_s))]
    assert len(old_interactions) == 4  # two bugs, the survey answer, the chat
    _age(dsn, "interactions", "created_at", old_interactions)
    _age(dsn, "conversations", "last_message_at", [old_chat])
    _age(dsn, "conversations", "created_at", [old_chat])
    _age(dsn, "sessions", "last_seen_at", [old_s])
    _age(dsn, "replays", "created_at", [stale_replay])
    sql(dsn, """INSERT INTO dead_letters (id, project_id, job, kind, payload, failed_at)
                VALUES ($1, $2, 'x', 'x', '{}', now() - interval '40 days'),
                       ($3, $2, 'x', 'x', '{}', now() - interval '1 day')""", uuid7(), pid, uuid7())
    for key in (old_shot, old_chunk, stale_chunk, new_shot, new_chunk):
        assert (objects / key).is_file(), key

    # Without a retention setting, a run keeps everything.
    kept = _run(stack.state_dir, "retention", p.id)
    until(lambda: _finished(dsn, kept), what="retention without a setting")
    assert p.get(f"/interactions/{old_bug}")["id"] == old_bug and not p.audit("retention.purged")

    r = p.router.patch(f"{p.base}/settings", json={"retention_days": 30}, headers=p.admin.h)
    assert r.status_code == 200 and r.json()["retention_days"] == 30, r.text
    outbox_id = _run(stack.state_dir, "retention", p.id)
    until(lambda: _finished(dsn, outbox_id), what="retention")

    for iid in old_interactions:
        p.get(f"/interactions/{iid}", 404)
    for path in (f"/replays/{old_replay}", f"/replays/{stale_replay}", f"/conversations/{old_chat}",
                 f"/sessions/{old_s}"):
        p.get(path, 404)
    for key in (old_shot, old_chunk, stale_chunk):
        assert not (objects / key).exists(), key
    # What is younger than 30 days is all there, bytes included.
    assert p.get(f"/interactions/{new_bug}")["id"] == new_bug
    assert p.get(f"/replays/{new_replay}")["id"] == new_replay
    assert p.get(f"/conversations/{new_chat}")["message_count"] == 1
    for key in (new_shot, new_chunk):
        assert (objects / key).is_file(), key
    # Counters of what survives no longer count what went.
    assert p.get(f"/feedback-items/{item}")["linked_interaction_count"] == 0
    assert p.get(f"/surveys/{survey}")["response_count"] == 1
    assert p.get(f"/sessions/{new_s}")["interaction_count"] == 3  # the bug, the survey answer, the chat
    assert [r["n"] for r in sql(dsn, "SELECT count(*) AS n FROM dead_letters WHERE project_id = $1", pid)] == [1]
    [entry] = p.audit("retention.purged")
    meta = entry["meta"]
    assert entry["actor_type"] == "system" and entry["target_id"] == p.id and "interrupted" not in meta
    assert {k: meta[k] for k in ("retention_days", "interactions", "media", "replays", "feedback_links",
                                 "survey_responses", "conversations", "messages", "sessions", "objects",
                                 "dead_letters")} == {
        "retention_days": 30, "interactions": 4, "media": 1, "replays": 2, "feedback_links": 1,
        "survey_responses": 1, "conversations": 1, "messages": 1, "sessions": 1, "objects": 3, "dead_letters": 1}
    # Running again finds nothing more to delete, and says so.
    again = _run(stack.state_dir, "retention", p.id)
    until(lambda: _finished(dsn, again), what="second retention run")
    latest = p.audit("retention.purged")[0]["meta"]
    assert latest.get("interactions", 0) == 0 and latest["objects"] == 0
    assert p.get(f"/interactions/{new_bug}")["id"] == new_bug


# Faults: a private topology --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def faults(pg: StorePostgres, scratch: Path) -> Iterator[Stack]:
    running = Stack(pg, scratch, "worker_faults")
    yield running
    running.close()


@pytest.fixture(scope="module")
def faults_router(faults: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=faults.dev.topology["router"]["url"], timeout=30, trust_env=False) as client:
        yield client


def test_ingest_survives_a_redis_outage_and_the_backlog_drains(faults: Stack, faults_router: httpx.Client) -> None:
    topo = faults.dev.topology
    dsn = _db(topo)
    p = Project(faults_router, Admin(faults_router))
    item = p.feedback_item()
    sql(dsn, "UPDATE feedback_items SET vote_count = 4 WHERE id = $1", uuid.UUID(item))
    start = sql(dsn, "SELECT coalesce(max(id), 0) AS id FROM outbox")[0]["id"]

    faults.redis[REGION].stop()
    try:
        # Ingest is acknowledged while the queue is down; follow-up work waits in the outbox.
        interactions = [p.interaction(text=f"while redis is down {i}") for i in range(3)]
        reconcile = _run(faults.dev.state_dir, "reconcile", p.id)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # the worker keeps trying, and runs nothing
            rows = sql(dsn, "SELECT kind, dispatched_at FROM outbox WHERE id > $1", start)
            assert {r["kind"] for r in rows} >= {"interaction.created", "maintenance.reconcile"}
            assert all(r["dispatched_at"] is None for r in rows), rows
            assert p.get(f"/feedback-items/{item}")["vote_count"] == 4
            time.sleep(0.3)
        assert faults.dev.dead() == []  # nothing crashed over it
    finally:
        faults.redis[REGION].start()

    # The backlog drains: the reconcile ran, and every row a consumer knows was relayed and finished.
    until(lambda: p.get(f"/feedback-items/{item}")["vote_count"] == 0, 60, "reconcile after the outage")
    until(lambda: _settled(dsn, p.id, start), 60, "the outbox backlog")
    assert _finished(dsn, reconcile)
    for iid in interactions:
        assert p.get(f"/interactions/{iid}")["id"] == iid


def test_a_worker_killed_mid_job_finishes_it_after_restart_exactly_once(faults: Stack,
                                                                         faults_router: httpx.Client) -> None:
    topo = faults.dev.topology
    dsn, objects = _db(topo), _objects(topo)
    p = Project(faults_router, Admin(faults_router))
    pid = uuid.UUID(p.id)
    s = p.session()
    old = [p.interaction(s, f"old {i}") for i in range(6)]
    shots = [p.screenshot(i) for i in old]
    new = [p.interaction(s, "new") for _ in range(2)]
    # Six old interactions, oldest first.
    sql(dsn, """UPDATE interactions i SET created_at = now() - interval '40 days' + make_interval(mins => o.n::int)
                  FROM unnest($1::uuid[]) WITH ORDINALITY AS o(id, n) WHERE i.id = o.id""",
        [uuid.UUID(i) for i in old])
    r = p.router.patch(f"{p.base}/settings", json={"retention_days": 30}, headers=p.admin.h)
    assert r.status_code == 200 and r.json()["retention_days"] == 30, r.text
    until(lambda: _settled(dsn, p.id), 60, "the jobs ingest caused")  # (so that the lock below stalls none)

    # A request holds the third oldest: retention deletes a first batch of two, then waits on it.
    held = Held(dsn, "SELECT 1 FROM interactions WHERE id = $1 FOR UPDATE", uuid.UUID(old[2]))
    try:
        outbox_id = sql(dsn, """INSERT INTO outbox (project_id, kind, payload) VALUES ($1, 'maintenance.retention',
                                  jsonb_build_object('project_id', $2::text, 'batch', 2)) RETURNING id""",
                        pid, p.id)[0]["id"]

        def mid_job() -> bool:
            runs = sql(dsn, "SELECT counts FROM maintenance_runs WHERE project_id = $1 AND finished_at IS NULL", pid)
            waiting = sql(dsn, """SELECT 1 FROM pg_stat_activity WHERE datname = current_database()
                                     AND wait_event_type = 'Lock' AND query LIKE '%FROM interactions%'""")
            return bool(runs and json.loads(runs[0]["counts"]).get("interactions") == 2 and waiting)

        until(mid_job, 60, "retention half way")
        faults.dev.kill(f"worker[{REGION}]")
        faults.dev.restart(f"worker[{REGION}]")
    finally:
        held.release()

    # The new worker notices the lost job (no heartbeat) and runs it again; it carries on from where it was.
    until(lambda: _finished(dsn, outbox_id), 120, "the retention job after the restart")
    for iid in old:
        p.get(f"/interactions/{iid}", 404)
    for iid in new:
        assert p.get(f"/interactions/{iid}")["id"] == iid
    for key in shots:
        assert not (objects / key).exists(), key
    assert p.get(f"/sessions/{s}")["interaction_count"] == 2
    # Exactly once in effect: two runs, the killed one's committed batch and the rest, each row counted once.
    entries = p.audit("retention.purged")
    by_run = sorted((e["meta"].get("interrupted", False), e["meta"]["interactions"], e["meta"]["objects"])
                    for e in entries)
    assert by_run == [(False, 4, 4), (True, 2, 2)]
    assert not sql(dsn, "SELECT 1 FROM maintenance_runs WHERE project_id = $1 AND finished_at IS NULL", pid)
    assert not sql(dsn, "SELECT 1 FROM dead_letters WHERE outbox_id = $1", outbox_id)
    assert faults.dev.dead() == []
