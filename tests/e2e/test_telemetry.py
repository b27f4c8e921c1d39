"""Telemetry end to end: one trace from the router through the cell to the outbox, no PII in any span or
metric, and Prometheus scrape endpoints on the router and on each cell."""

from __future__ import annotations

import inspect
import json
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from common.metrics import families
from relay.devstack import DevStack
from tests.conftest import Admin, Stack, problem, sql, until
from tests.services import StorePostgres


def _traces(stack: DevStack) -> Path:
    return stack.state_dir.parent / "traces"


def _spans(stack: DevStack, name: str) -> list[dict[str, Any]]:
    path = _traces(stack) / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def _until(found: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    """Poll until `found()` is truthy (spans are exported in batches every 200 ms)."""
    return until(found, timeout, what, every=0.1)


def scraper(topo: dict[str, Any]) -> dict[str, str]:
    """What a scraper sends: the metrics token `relay dev` gave every service (RELAY_METRICS_TOKEN)."""
    return {"Authorization": f"Bearer {topo['router']['metrics_token']}"}


def value_at(url: str, name: str, topo: dict[str, Any], **labels: str) -> float:
    """The sum of the samples of `name` with these labels in a fresh scrape of `url`/metrics."""
    found = families(httpx.get(url + "/metrics", trust_env=False, headers=scraper(topo)).text).get(name, [])
    return sum(v for lab, v in found if all(lab.get(k) == x for k, x in labels.items()))


def _ingest(router: httpx.Client, key: dict[str, Any], text: str = "it broke") -> dict[str, Any]:
    r = router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug", "content": {"text": text}})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_one_ingest_is_one_trace_from_router_through_cell_to_outbox(
        stack: DevStack, router: httpx.Client, admin: Admin, topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    key = admin.key(project, ["ingest", "read"])
    interaction = _ingest(router, key)

    def forwarded() -> list[dict[str, Any]]:
        return [s for s in _spans(stack, "router") if s["name"] == "router.forward"
                and s["attributes"].get("relay.project_id") == pid
                and s["attributes"].get("http.route") == "/v1/ingest/interactions"]

    [hop] = _until(forwarded, "the router's span")
    trace_id = hop["trace_id"]
    assert hop["kind"] == "CLIENT" and hop["attributes"]["relay.region"] == "eu-west"
    assert hop["attributes"]["relay.route_class"] == "ingest" and hop["attributes"]["http.response.status_code"] == 201
    assert hop["attributes"]["relay.key_prefix"] == key["key_prefix"]

    def in_cell() -> list[dict[str, Any]]:
        spans = [s for s in _spans(stack, "cell-eu-west") if s["trace_id"] == trace_id]
        server = [s for s in spans if s["kind"] == "SERVER"]
        return spans if server and len(spans) > 1 else []

    cell = _until(in_cell, "the cell's spans of the same trace")
    [server] = [s for s in cell if s["kind"] == "SERVER"]
    # The cell's server span is the router span's child, named by the route template, and carries the
    # region and the project; so does every span under it, asyncpg's first.
    assert server["parent_id"] == hop["span_id"]
    assert server["name"] == "POST /v1/ingest/interactions"
    assert server["attributes"]["http.route"] == "/v1/ingest/interactions"
    assert server["attributes"]["relay.region"] == "eu-west" and server["attributes"]["relay.project_id"] == pid
    assert server["resource"]["service.name"] == "relay-cell" and server["resource"]["relay.region"] == "eu-west"
    db = [s for s in cell if s["attributes"].get("db.system") == "postgresql"]
    assert db, [s["name"] for s in cell]
    assert all(s["attributes"]["relay.region"] == "eu-west" and s["attributes"]["relay.project_id"] == pid
               for s in cell)
    inserts = [s["attributes"]["db.statement"] for s in db if "INSERT INTO interactions" in
               s["attributes"].get("db.statement", "")]
    assert inserts and "$1" in inserts[0] and "it broke" not in inserts[0]
    assert not any("db.statement.parameters" in s["attributes"] for s in db)
    # Nothing of the cell's trace leaked into the other region.
    assert not [s for s in _spans(stack, "cell-us-west") if s["trace_id"] == trace_id]

    # The job the request queued carries the trace on: the outbox row holds the request's traceparent
    # (the worker continues it with common.telemetry.job_span).
    [row] = sql(topo["cells"]["eu-west"]["database_url"],
                """SELECT traceparent FROM outbox WHERE kind = 'interaction.created'
                    AND payload->>'interaction_id' = $1""", interaction["id"])
    version, row_trace, parent_span, flags = row["traceparent"].split("-")
    assert (version, row_trace) == ("00", trace_id) and int(flags, 16) & 1  # sampled
    assert parent_span in {s["span_id"] for s in cell}


def _worker_wired() -> bool:
    import cell.worker

    return "job_span" in inspect.getsource(cell.worker)


@pytest.mark.skipif(not _worker_wired(), reason="the worker does not continue traces yet (common.telemetry.job_span)")
def test_the_worker_continues_the_trace_of_the_request_that_queued_the_job(
        stack: DevStack, router: httpx.Client, admin: Admin) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    key = admin.key(project, ["ingest"])
    _ingest(router, key)
    [hop] = _until(lambda: [s for s in _spans(stack, "router") if s["name"] == "router.forward"
                            and s["attributes"].get("relay.project_id") == pid], "the router's span")

    def jobs() -> list[dict[str, Any]]:
        return [s for s in _spans(stack, "worker-eu-west") if s["trace_id"] == hop["trace_id"]]

    spans = _until(lambda: [s for s in jobs() if s["name"].startswith("job ")], "a job span in the same trace", 30)
    job = spans[0]
    assert job["kind"] == "CONSUMER" and job["attributes"]["relay.region"] == "eu-west"
    assert job["attributes"]["relay.project_id"] == pid and job["attributes"]["relay.job"]
    assert job["resource"]["service.name"] == "relay-worker"


def test_no_pii_in_any_span_trace_file_or_metrics(stack: DevStack, router: httpx.Client, admin: Admin,
                                                  topo: dict[str, Any]) -> None:
    canary = f"canary{secrets.token_hex(8)}"
    project = admin.project("eu-west")
    pid = project["id"]
    key = admin.key(project, ["ingest", "read", "write"])
    ip = "198.51.100.77"
    h = {**key["h"], "User-Agent": f"ua-{canary}", "X-Debug": canary, "X-Forwarded-For": ip,
         "Cookie": f"session={canary}", "Baggage": f"user={canary}", "Tracestate": f"relay={canary}"}
    body = {"type": "bug", "content": {"text": f"text {canary}", "title": canary},
            "user": {"external_id": f"user-{canary}", "email": f"{canary}@example.com", "name": canary},
            "technical_context": {"url": f"https://app.example.com/?q={canary}"}}
    created = router.post(f"/v1/ingest/interactions?trace={canary}", headers=h, json=body)
    assert created.status_code == 201, created.text
    iid = created.json()["id"]
    assert router.post("/v1/ingest/interactions", headers=h, json={"type": canary}).status_code == 422
    listed = router.get(f"/v1/projects/{pid}/interactions", params={"q": canary, "status": canary}, headers=h)
    assert listed.status_code in (200, 422)
    assert router.patch(f"/v1/projects/{pid}/interactions/{iid}", headers=h,
                        json={"title": canary}).status_code in (200, 422)
    # A value in a path segment (a client bug) and a bad uuid the cell's database would complain about.
    assert router.get(f"/v1/projects/{pid}/interactions/{canary}", headers=h).status_code in (404, 422)
    assert router.get(f"/v1/projects/{pid}/end-users/{canary}@example.com", headers=h).status_code in (404, 422)
    assert router.post("/v1/auth/login", json={"email": f"{canary}@example.com", "password": canary * 2}
                       ).status_code == 401
    assert router.post("/v1/ingest/interactions", headers={"Authorization": f"Bearer rk_eu_{canary}"},
                       json=body).status_code == 401

    def exported() -> bool:  # the last requests' spans are on disk
        return any(s["attributes"].get("relay.project_id") == pid and s["attributes"].get("http.route", "")
                   .endswith("/end-users/{id}") for s in _spans(stack, "router"))

    _until(exported, "the router's spans of the last request")
    _until(lambda: any(s["attributes"].get("relay.project_id") == pid and s["kind"] == "SERVER"
                       and s["attributes"].get("http.route") == "/v1/projects/{project_id}/interactions"
                       for s in _spans(stack, "cell-eu-west")), "the cell's spans")
    time.sleep(0.5)  # one more export period, so the last batch of every process is written too

    files = sorted(_traces(stack).glob("*.jsonl"))
    assert {"router.jsonl", "cell-eu-west.jsonl"} <= {f.name for f in files}
    scrapes = {"router": router.get("/metrics", headers=scraper(topo)).text}
    for region, cell in topo["cells"].items():
        scrapes[f"cell-{region}"] = httpx.get(cell["url"] + "/metrics", trust_env=False, headers=scraper(topo)).text
    # The evidence is there in the cell (per-project counts, in the project's region) …; the router, in front
    # of every region, labels nothing with a project id.
    assert pid in scrapes["cell-eu-west"] and pid not in scrapes["router"]
    assert "relay_project_id" not in scrapes["router"]
    for f in files:
        text = f.read_text()
        assert pid in text or f.name != "cell-eu-west.jsonl"
        # … and the canary, the end user's identity and the client's address are not.
        for needle in (canary, ip, "example.com", "app.example"):
            assert needle not in text, (f.name, needle)
        for line in text.splitlines():
            span = json.loads(line)
            for k, v in span["attributes"].items():
                assert "client" not in k and not k.endswith((".ip", "address")), (f.name, k)
                assert not k.startswith(("http.request.header", "url.query", "user_agent", "enduser")), (f.name, k)
                assert k not in ("http.user_agent", "db.statement.parameters"), (f.name, k)
                if k in ("http.url", "url.full"):
                    assert "?" not in v and v.count("/") == 2, (f.name, k, v)
            for event in span["events"]:
                assert set(event["attributes"]) <= {"exception.type", "exception.escaped"}, event
    for name, text in scrapes.items():
        for needle in (canary, ip, "example.com"):
            assert needle not in text, (name, needle)


def test_metrics_endpoints_on_router_and_cells(stack: DevStack, router: httpx.Client, admin: Admin,
                                              topo: dict[str, Any]) -> None:
    project = admin.project("eu-west")
    pid = project["id"]
    key = admin.key(project, ["ingest", "read"])
    _ingest(router, key)
    assert router.get(f"/v1/projects/{pid}/interactions", headers=key["h"]).status_code == 200
    assert router.post("/v1/ingest/interactions", headers={"Authorization": "Bearer rk_eu_nope"},
                       json={"type": "bug"}).status_code == 401

    # Only a scraper with the token gets the metrics.
    problem(router.get("/metrics"), 401)
    problem(router.get("/metrics", headers={"Authorization": "Bearer not-the-metrics-token"}), 401)
    scrape = router.get("/metrics", headers=scraper(topo))
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    m = families(scrape.text)

    def value(name: str, **labels: str) -> float:
        return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))

    # Requests per region, route class, method and status; errors; latency histograms.
    assert value("relay_router_requests_total", relay_region="eu-west", relay_route_class="ingest",
                 http_request_method="POST", http_response_status_code="201") >= 1
    assert value("relay_router_requests_total", relay_region="eu-west", relay_route_class="management",
                 http_request_method="GET", http_response_status_code="200") >= 1
    assert value("relay_router_requests_total", relay_region="global", relay_route_class="ingest",
                 http_response_status_code="401") >= 1
    assert value("relay_router_requests_total", relay_region="global", relay_route_class="control",
                 http_request_method="POST", http_response_status_code="201") >= 1
    assert value("relay_router_request_duration_seconds_count", relay_region="eu-west",
                 relay_route_class="ingest", http_response_status_code="201") >= 1
    assert value("relay_router_request_duration_seconds_bucket", relay_region="eu-west",
                 relay_route_class="ingest", http_response_status_code="201", le="+Inf") >= 1
    assert "relay_router_request_errors_total" in scrape.text  # declared, even while nothing failed
    assert "relay_router_project_requests_total" not in m  # no project id labels on the router
    assert not [lab for samples in m.values() for lab, _ in samples if "relay_project_id" in lab]
    # Per cell: breaker state, in-flight requests and their capacity, pooled connections; control DB pool.
    for region in topo["cells"]:
        assert value("relay_router_cell_breaker", relay_region=region, state="closed") == 1
        assert value("relay_router_cell_breaker", relay_region=region, state="open") == 0
        [in_flight] = [v for lab, v in m["relay_router_cell_in_flight"] if lab["relay_region"] == region]
        assert 0 <= in_flight < value("relay_router_cell_capacity", relay_region=region)
        assert value("relay_router_cell_capacity", relay_region=region) > 0
        assert [lab for lab, _ in m["relay_router_cell_connections"] if lab["relay_region"] == region]
    assert value("relay_db_pool_connections", relay_region="global", state="max") > 0
    for samples in m.values():
        assert all("relay_region" in lab or not lab for lab, _ in samples)

    # The cell: no signature needed for /metrics (and still for everything else), but the token is.
    cell_url = topo["cells"]["eu-west"]["url"]
    assert httpx.get(cell_url + "/v1/ingest/config", trust_env=False).status_code == 401
    problem(httpx.get(cell_url + "/metrics", trust_env=False), 401)
    scrape = httpx.get(cell_url + "/metrics", trust_env=False, headers=scraper(topo))
    assert scrape.status_code == 200 and scrape.headers["content-type"].startswith("text/plain")
    m = families(scrape.text)
    assert value("relay_cell_requests_total", relay_region="eu-west", http_route="/v1/ingest/interactions",
                 http_request_method="POST", http_response_status_code="201") >= 1
    assert value("relay_cell_requests_total", relay_region="eu-west",
                 http_route="/v1/projects/{project_id}/interactions", http_response_status_code="200") >= 1
    assert value("relay_cell_request_duration_seconds_count", relay_region="eu-west",
                 http_route="/v1/ingest/interactions") >= 1
    assert value("relay_cell_project_requests_total", relay_region="eu-west", relay_project_id=pid,
                 status_class="2xx") >= 2
    assert [lab for lab, _ in m["relay_cell_outbox_backlog"]] == [{"relay_region": "eu-west"}]
    assert {lab["state"] for lab, _ in m["relay_cell_queue_depth"]} == {"queued", "active", "scheduled"}
    assert value("relay_db_pool_connections", relay_region="eu-west", state="max") > 0
    assert not [lab for lab, _ in m.get("relay_cell_requests_total", []) if lab["relay_region"] != "eu-west"]
    # The outbox backlog is what the database says, read at most every few seconds: 500 rows of a kind no
    # worker consumes stay pending until removed.
    dsn = topo["cells"]["eu-west"]["database_url"]
    sql(dsn, """INSERT INTO outbox (project_id, kind, payload, available_at)
                SELECT $1, 'telemetry.probe', '{}', now() + interval '1 day' FROM generate_series(1, 500)""",
        uuid.UUID(pid))
    try:
        _until(lambda: value_at(cell_url, "relay_cell_outbox_backlog", topo, relay_region="eu-west") >= 500,
               "the backlog gauge to see the new rows")
    finally:
        sql(dsn, "DELETE FROM outbox WHERE project_id = $1 AND kind = 'telemetry.probe'", uuid.UUID(pid))
    _until(lambda: value_at(cell_url, "relay_cell_outbox_backlog", topo, relay_region="eu-west") < 500,
           "the backlog gauge to see them gone")
    us = families(httpx.get(topo["cells"]["us-west"]["url"] + "/metrics", trust_env=False,
                            headers=scraper(topo)).text)
    assert not [lab for lab, _ in us.get("relay_cell_requests_total", []) if lab["relay_region"] != "us-west"]


def test_a_dead_cell_shows_as_an_open_breaker_and_counted_errors(pg: StorePostgres, scratch: Path) -> None:
    private = Stack(pg, scratch, "telemetry")
    try:
        router = httpx.Client(base_url=private.dev.topology["router"]["url"], timeout=30, trust_env=False)
        admin = Admin(router)
        key = admin.key(admin.project("eu-west"), ["ingest"])
        _ingest(router, key)
        private.dev.kill("cell[eu-west]")
        codes = [router.post("/v1/ingest/interactions", headers=key["h"], json={"type": "bug"}).status_code
                 for _ in range(8)]
        assert set(codes) == {503}, codes
        m = families(router.get("/metrics", headers=scraper(private.dev.topology)).text)

        def value(name: str, **labels: str) -> float:
            return sum(v for lab, v in m.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))

        assert value("relay_router_cell_breaker", relay_region="eu-west", state="closed") == 0
        assert value("relay_router_cell_breaker", relay_region="eu-west", state="open") + \
            value("relay_router_cell_breaker", relay_region="eu-west", state="half-open") == 1
        assert value("relay_router_cell_breaker", relay_region="us-west", state="closed") == 1
        assert value("relay_router_request_errors_total", relay_region="eu-west", relay_route_class="ingest",
                     http_request_method="POST", http_response_status_code="503") == 8
        assert value("relay_router_requests_total", relay_region="eu-west", relay_route_class="ingest",
                     http_response_status_code="201") == 1
        assert value("relay_router_request_errors_total", http_response_status_code="201") == 0
        router.close()
    finally:
        private.close()
