"""Telemetry in one process: attribute and span scrubbing (with an in-memory exporter), the job span that
continues a queued request's trace, zero cost without an exporter, OTLP export, and the lock-free metrics."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from litestar import Litestar, get
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from common import metrics
from common.telemetry import (
    HttpServerTelemetry,
    ScrubbingExporter,
    _Stamp,
    path_template,
    redact,
    route_of,
    scrub_attributes,
    scrub_name,
    scrub_sql,
)

ROOT = Path(__file__).resolve().parents[2]
CANARY = "canary7f3a9c"
PID = "0190a3c2-1111-7222-8333-444455556666"

# -- attributes -----------------------------------------------------------------------------------------------


def test_scrub_drops_who_the_client_is_and_what_it_sent() -> None:
    given = {
        "client.address": "203.0.113.9", "client.port": 51234, "net.peer.ip": "203.0.113.9",
        "net.sock.peer.addr": "203.0.113.9", "network.peer.address": "203.0.113.9", "http.client_ip": "203.0.113.9",
        "http.user_agent": f"ua {CANARY}", "user_agent.original": f"ua {CANARY}", "url.query": f"q={CANARY}",
        "http.request.header.x_debug": [CANARY], "http.response.header.set_cookie": [CANARY],
        "enduser.id": CANARY, "user.email": f"{CANARY}@example.com", "db.statement.parameters": f"('{CANARY}',)",
        "db.query.parameter.0": CANARY, "relay.customer_email": CANARY, "exception.message": CANARY,
        "server.address": "db.internal", "http.server_name": "cell:8101",
    }
    assert scrub_attributes(given) == {}


def test_scrub_keeps_relay_attributes_and_reduces_urls_paths_and_sql() -> None:
    out = scrub_attributes({
        "relay.region": "eu-west", "relay.project_id": PID, "relay.key_prefix": "rk_eu_abc123",
        "http.request.method": "POST", "http.response.status_code": 201, "http.route": "/v1/ingest/interactions",
        "http.url": f"https://user:pw@hooks.example.org:8443/services/T0/B0/{CANARY}?token={CANARY}#x",
        "url.full": f"http://127.0.0.1:8101/v1/projects/{PID}/x?q={CANARY}",
        "http.target": f"/v1/projects/{PID}/interactions/{CANARY}?q={CANARY}",
        "url.path": f"/v1/ingest/replays/{PID}/chunks/7",
        "db.statement": f"SELECT * FROM t WHERE a = $1 AND b = '{CANARY}' AND c = 42 AND d = $$ {CANARY} $$ LIMIT 10",
        "db.system": "postgresql", "net.peer.name": "10.1.2.3", "net.peer.port": 5432,
        "messages": [f"{CANARY}@example.com", "ok"],
    })
    assert out["relay.region"] == "eu-west" and out["relay.project_id"] == PID
    assert out["relay.key_prefix"] == "rk_eu_abc123" and out["http.response.status_code"] == 201
    assert out["http.route"] == "/v1/ingest/interactions"
    assert out["http.url"] == "https://hooks.example.org:8443"
    assert out["url.full"] == "http://127.0.0.0:8101"
    assert out["http.target"] == "/v1/projects/{id}/interactions/{id}"
    assert out["url.path"] == "/v1/ingest/replays/{id}/chunks/{id}"
    assert out["db.statement"] == "SELECT * FROM t WHERE a = $1 AND b = ? AND c = ? AND d = ? LIMIT ?"
    assert out["net.peer.name"] == "10.1.2.0" and out["net.peer.port"] == 5432
    assert out["messages"] == ["[email]", "ok"]
    assert CANARY not in json.dumps(out)


@pytest.mark.parametrize("path, template", [
    ("/v1/ingest/interactions", "/v1/ingest/interactions"),
    (f"/v1/projects/{PID}/api-keys?x=1", "/v1/projects/{id}/api-keys"),
    ("/v1/projects/{project_id}/interactions/{interaction_id:uuid}",
     "/v1/projects/{project_id}/interactions/{interaction_id:uuid}"),
    ("/v1/ingest/replays/0190a3c2111172228333444455556666/chunks/3", "/v1/ingest/replays/{id}/chunks/{id}"),
    (f"/v1/projects/{PID}/interactions/{CANARY}", "/v1/projects/{id}/interactions/{id}"),
    ("/v1/ingest/users/jo@example.com", "/v1/ingest/users/{id}"),
    ("/v1/projects/rk_eu_abcdef1234567890", "/v1/projects/{id}"),
    (f"/v1/hooks/{PID}/linear", "/v1/hooks/{id}/linear"),
    ("/", "/"), ("/metrics", "/metrics"),
])
def test_path_template(path: str, template: str) -> None:
    assert path_template(path) == template


def test_redact_and_sql_and_names() -> None:
    assert redact("mail a.b+c@sub.example.co.uk now") == "mail [email] now"
    assert redact("from 192.168.10.77:5432") == "from 192.168.10.0:5432"
    assert redact("2001:db8:abcd:12:1:2:3:4") == "2001:db8:abcd::"
    assert redact("version 1.2.3") == "version 1.2.3"
    assert scrub_sql("UPDATE t SET n = n + 1, s = E'it''s' WHERE id = ANY($1::bigint[])") == \
        "UPDATE t SET n = n + ?, s = ? WHERE id = ANY($1::bigint[])"
    assert scrub_sql("SELECT $tag$ secret $tag$, x FROM y WHERE z > 1.5") == "SELECT ?, x FROM y WHERE z > ?"
    assert scrub_name(f"GET /v1/projects/{PID}/interactions/{CANARY}") == "GET /v1/projects/{id}/interactions/{id}"
    assert scrub_name("router.forward") == "router.forward"
    assert scrub_name(f"job {CANARY}@example.com") == "job [email]"


# -- spans, through an in-memory exporter ---------------------------------------------------------------------


@pytest.fixture
def exported() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(_Stamp("eu-west"))
    provider.add_span_processor(SimpleSpanProcessor(ScrubbingExporter(memory)))
    yield provider, memory
    provider.shutdown()


def test_exported_spans_are_scrubbed_and_stamped(exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, memory = exported
    tracer = provider.get_tracer("test")
    with pytest.raises(ValueError, match=CANARY), tracer.start_as_current_span(
            f"POST /v1/projects/{PID}/x/{CANARY}", kind=SpanKind.SERVER,
            attributes={"client.address": "203.0.113.9", "http.user_agent": CANARY, "net.peer.port": 51234,
                        "url.full": f"http://cell/v1/x?email={CANARY}@example.com"}) as span:
        span.add_event("note", {"exception.type": "X", "detail": CANARY})
        with tracer.start_as_current_span("SELECT", kind=SpanKind.CLIENT,
                                          attributes={"db.statement": f"SELECT '{CANARY}'", "net.peer.port": 5432}):
            pass
        raise ValueError(f"bad input {CANARY}")
    [child, server] = memory.get_finished_spans()
    assert server.name == "POST /v1/projects/{id}/x/{id}"
    assert dict(server.attributes or {}) == {"url.full": "http://cell", "relay.region": "eu-west"}
    assert server.status.status_code is StatusCode.ERROR and not server.status.description
    events = {e.name: dict(e.attributes or {}) for e in server.events}
    assert events == {"note": {"exception.type": "X"}, "exception": {"exception.type": "ValueError",
                                                                      "exception.escaped": "False"}}
    assert dict(child.attributes or {}) == {"db.statement": "SELECT ?", "net.peer.port": 5432,
                                            "relay.region": "eu-west"}  # a client's peer is its server
    assert child.parent is not None and child.parent.span_id == server.context.span_id  # type: ignore[union-attr]
    assert CANARY not in repr([s.to_json() for s in memory.get_finished_spans()])


def test_the_project_is_stamped_on_every_span_under_a_request(
        exported: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    from common.telemetry import _project

    provider, memory = exported
    tracer = provider.get_tracer("test")
    token = _project.set(PID)
    try:
        with tracer.start_as_current_span("outer"), tracer.start_as_current_span("inner"):
            pass
    finally:
        _project.reset(token)
    with tracer.start_as_current_span("outside"):
        pass
    stamped = {s.name: dict(s.attributes or {}) for s in memory.get_finished_spans()}
    assert stamped["outer"] == stamped["inner"] == {"relay.region": "eu-west", "relay.project_id": PID}
    assert stamped["outside"] == {"relay.region": "eu-west"}


# -- whole processes: the worker's job span, zero cost, OTLP --------------------------------------------------

_JOB = """
import json, sys, uuid
from opentelemetry import trace
from common import metrics, telemetry
telemetry.setup("worker", "eu-west")
carrier = json.loads(sys.argv[1])
project = uuid.UUID(sys.argv[2])
tracer = trace.get_tracer("job")
with telemetry.job_span("webhooks.interaction.created", carrier, "eu-west", project) as span:
    with tracer.start_as_current_span("work"):
        inner = telemetry.current_traceparent()
try:
    with telemetry.job_span("enrichment.interaction", {"traceparent": carrier, "interaction_id": "x"}, None, None):
        raise RuntimeError("failed on secret-canary7f3a9c")
except RuntimeError:
    pass
with telemetry.job_span("fresh", None):
    pass
metrics.record_job("webhooks.interaction.created", 0.25, True)
metrics.record_job("enrichment.interaction", 1.5, False)
print(json.dumps({"inner": inner, "provider": type(trace.get_tracer_provider()).__name__,
                  "tracing": telemetry.tracing(), "metrics": metrics.render().decode()}))
telemetry.shutdown()
"""


def _run(code: str, env: dict[str, str], *args: str) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RELAY_", "OTEL_"))}
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_job_span_continues_the_trace_the_outbox_row_carried(tmp_path: Path) -> None:
    trace_file = tmp_path / "worker.jsonl"
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    out = _run(_JOB, {"RELAY_TRACE_FILE": str(trace_file)}, json.dumps(traceparent), PID)
    assert out["tracing"] and out["provider"] == "TracerProvider"
    spans = {s["name"]: s for s in map(json.loads, trace_file.read_text().splitlines())}
    job = spans["job webhooks.interaction.created"]
    assert job["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and job["parent_id"] == "b7ad6b7169203331"
    assert job["kind"] == "CONSUMER" and job["status"] == "UNSET"
    assert job["attributes"] == {"relay.job": "webhooks.interaction.created", "relay.region": "eu-west",
                                 "relay.project_id": PID}
    assert job["resource"]["service.name"] == "relay-worker" and job["resource"]["relay.region"] == "eu-west"
    work = spans["work"]
    assert work["parent_id"] == job["span_id"] and work["attributes"]["relay.project_id"] == PID
    # Outbox rows a job writes continue the same trace.
    assert out["inner"].split("-")[1:3] == [job["trace_id"], work["span_id"]]
    failed = spans["job enrichment.interaction"]  # a payload carrying the traceparent works too
    assert failed["trace_id"] == job["trace_id"] and failed["status"] == "ERROR"
    assert failed["events"] == [{"name": "exception", "attributes": {"exception.type": "RuntimeError",
                                                                      "exception.escaped": "False"}}]
    assert "relay.project_id" not in failed["attributes"]
    assert spans["job fresh"]["trace_id"] != job["trace_id"] and spans["job fresh"]["parent_id"] is None
    assert "canary" not in trace_file.read_text()
    m = metrics.families(out["metrics"])
    assert ({"relay_region": "eu-west", "relay_job": "enrichment.interaction", "outcome": "failed"}, 1.0) in \
        m["relay_worker_job_failures_total"]
    assert ({"relay_region": "eu-west", "relay_job": "webhooks.interaction.created", "outcome": "ok"}, 1.0) in \
        m["relay_worker_jobs_total"]


_QUIET = """
import json
from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from common import telemetry
telemetry.setup("cell", "eu-west")
with telemetry.job_span("x", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "eu-west", "p") as span:
    recording = span.is_recording()
    traceparent = telemetry.current_traceparent()
print(json.dumps({"provider": type(trace.get_tracer_provider()).__name__, "recording": recording,
                  "traceparent": traceparent, "asyncpg": AsyncPGInstrumentor().is_instrumented_by_opentelemetry,
                  "httpx": HTTPXClientInstrumentor().is_instrumented_by_opentelemetry,
                  "configured": telemetry.tracing_configured()}))
"""


def test_without_an_exporter_there_is_no_provider_and_no_instrumentation() -> None:
    out = _run(_QUIET, {})
    assert out == {"provider": "ProxyTracerProvider", "recording": False, "traceparent": None, "asyncpg": False,
                   "httpx": False, "configured": False}


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_otlp_http_export_of_spans_and_metrics_is_scrubbed_too(tmp_path: Path) -> None:
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        _run(_JOB, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, json.dumps("00-0af7651916cd43dd8448eb211c80319c-"
                                                                         "b7ad6b7169203331-01"), PID)
    finally:
        server.shutdown()
        server.server_close()
    paths = {path for path, _ in _Collector.received}
    assert paths == {"/v1/traces", "/v1/metrics"}
    spans = []
    for path, body in _Collector.received:
        if path == "/v1/traces":
            request = ExportTraceServiceRequest()
            request.ParseFromString(body)
            spans += [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    names = {s.name for s in spans}
    assert {"job webhooks.interaction.created", "work", "job enrichment.interaction"} <= names
    for s in spans:
        attributes = {a.key: a.value.string_value for a in s.attributes}
        assert attributes["relay.region"] == "eu-west"
        assert all(a.key == "exception.type" or a.key == "exception.escaped" for e in s.events for a in e.attributes)
    assert not any(b"canary" in body for _, body in _Collector.received)
    [metrics_body] = [body for path, body in _Collector.received if path == "/v1/metrics"][-1:]
    request = ExportMetricsServiceRequest()
    request.ParseFromString(metrics_body)
    exported = {m.name: m for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    jobs = exported["relay.worker.job.duration"].histogram.data_points
    assert {(p.count, {a.key: a.value.string_value for a in p.attributes}["relay.job"]) for p in jobs} == \
        {(1, "webhooks.interaction.created"), (1, "enrichment.interaction")}
    assert "relay.uptime" in exported and "relay.worker.job.failures" in exported


# -- metrics ---------------------------------------------------------------------------------------------------


def test_timings_buckets_errors_and_the_series_cap() -> None:
    t = metrics.Timings(count="t.requests", duration="t.duration", errors="t.errors", labels=("relay.region", "r", "s"),
                        description="test", failed=metrics.server_error(2), max_series=3)
    t.record(("eu-west", "/a", 200), 0.001)   # on a bound: counted in that bucket (le="0.001")
    t.record(("eu-west", "/a", 200), 0.004)
    t.record(("eu-west", "/a", 503), 400.0)   # past the last bound: +Inf
    for i in range(5):
        t.record(("us-west", f"/junk{i}", 404), 0.02)
    [(_, count, total, buckets, low, high)] = [s for s in t.snapshot() if s[0] == ("eu-west", "/a", 200)]
    assert (count, round(total, 6), low, high) == (2, 0.005, 0.001, 0.004)
    assert buckets[0] == 1 and buckets[2] == 1 and sum(buckets) == 2
    assert [s[3][-1] for s in t.snapshot() if s[0][2] == 503] == [1]
    keys = {s[0] for s in t.snapshot()}
    assert len(keys) == 4 and ("us-west", "other", "other") in keys  # the region survives the cap
    assert dict((s[0], s[1]) for s in t.snapshot())[("us-west", "other", "other")] == 4
    _, errors_metric, histogram = t.points(1)
    assert [dict(p.attributes or {}) for p in errors_metric.data.data_points] == [
        {"relay.region": "eu-west", "r": "/a", "s": 503}]
    assert histogram.unit == "s" and list(histogram.data.data_points[0].explicit_bounds) == list(metrics.BUCKETS)


def test_counts_cap_and_status_class() -> None:
    c = metrics.Counts("c.total", ("relay.region", "relay.project_id", "status_class"), "test", max_series=2)
    c.add(("eu-west", "p1", metrics.status_class(201)))
    c.add(("eu-west", "p1", metrics.status_class(204)))
    c.add(("eu-west", "p2", metrics.status_class(503)))
    c.add(("eu-west", "p3", metrics.status_class(99)))
    points = {tuple(p.attributes.values()): p.value for p in c.points(1)[0].data.data_points}  # type: ignore[union-attr]
    assert points == {("eu-west", "p1", "2xx"): 2, ("eu-west", "p2", "5xx"): 1, ("eu-west", "other", "other"): 1}


async def test_probe_reads_at_most_every_ttl_and_keeps_values_on_failure() -> None:
    reads: list[int] = []

    async def read() -> list[tuple[float, dict[str, Any]]]:
        reads.append(1)
        if len(reads) == 2:
            raise ConnectionError("down")
        return [(float(len(reads)), {"relay.region": "eu-west"})]

    probe = metrics.Probe(read, ttl=0.2)
    await asyncio.gather(probe.refresh(), probe.refresh(), probe.refresh())
    assert probe() == [(1.0, {"relay.region": "eu-west"})] and len(reads) == 1
    await probe.refresh()
    assert len(reads) == 1  # cached
    await asyncio.sleep(0.25)
    await probe.refresh()  # fails: the last values stay
    assert probe() == [(1.0, {"relay.region": "eu-west"})] and len(reads) == 2
    await probe.refresh()  # a failed read is retried at once
    assert probe() == [(3.0, {"relay.region": "eu-west"})]


async def test_http_server_telemetry_records_route_templates_never_paths() -> None:
    seen: list[tuple[str, int, str | None]] = []

    @get("/v1/projects/{project_id:uuid}/things", sync_to_thread=False)
    def things() -> dict[str, str]:
        return {"ok": "yes"}

    app = Litestar([things])

    def record(scope: Any, status: int, seconds: float, project: str | None) -> None:
        assert seconds >= 0
        seen.append((route_of(scope), status, project))

    served = HttpServerTelemetry(app, record)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=served), base_url="http://cell") as client:
        assert (await client.get(f"/v1/projects/{PID}/things?q={CANARY}")).status_code == 200
        assert (await client.get(f"/v1/projects/{CANARY}/things")).status_code == 404
        assert (await client.get(f"/nowhere/{CANARY}")).status_code == 404
    assert seen == [("/v1/projects/{project_id}/things", 200, None), ("unmatched", 404, None),
                    ("unmatched", 404, None)]


_SCRAPED = """
import json, os, urllib.request
from common import metrics, telemetry
telemetry.setup("worker", "us-west")
metrics.record_job("replays.process", 2.0, True)
port = os.environ["RELAY_METRICS_PORT"]
with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
    print(json.dumps({"text": r.read().decode(), "type": r.headers["Content-Type"]}))
"""


def test_a_worker_serves_its_metrics_on_relay_metrics_port() -> None:
    from relay.embedded import free_port

    out = _run(_SCRAPED, {"RELAY_METRICS_PORT": str(free_port())})
    assert out["type"].startswith("text/plain")
    m = metrics.families(out["text"])
    assert ({"relay_region": "us-west", "relay_job": "replays.process", "outcome": "ok"}, 1.0) in \
        m["relay_worker_job_duration_seconds_count"]
    assert [lab for lab, _ in m["relay_uptime_seconds"]] == [{"relay_region": "us-west"}]
