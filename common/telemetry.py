"""Logs and traces for every Relay process, with the no-PII rule built in.

Logs are JSON lines on stderr (one object per record: time, level, service,
region, logger, message, the current trace and span ids and any `extra`
fields). Traces use the OpenTelemetry SDK, and only when there is somewhere to
send them: RELAY_TRACE_FILE (a JSON-lines file, for tests and local debugging)
and/or OTEL_EXPORTER_OTLP_ENDPOINT (OTLP over HTTP, an operator's choice).
With neither, no SDK provider and no instrumentation is installed: spans are
no-ops and cost nothing. With one, asyncpg, Redis and httpx are instrumented
with the official packages and the cell's HTTP server gets server spans.

What goes into a span is decided at each call site — method, route template,
status, duration, region, project id, key prefix — and every exported span
passes `scrub_span` on its way out: client addresses, user agents, headers,
query strings, URL paths beyond their template, SQL literals, exception
messages and anything shaped like an email address or a full IP are removed,
whatever an instrumentation library chose to record. `relay.region` (and
`relay.project_id` once the caller is known) is stamped on every span.

Traces cross process boundaries in W3C `traceparent`: the router injects it
into the internal hop, the cell's outbox row carries it (`current_traceparent`)
and the worker continues it around each job (`job_span`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind, Status
from opentelemetry.util.types import Attributes, AttributeValue

from common import metrics

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}
GLOBAL = "global"
"""The `relay.region` of what belongs to no region: the router's own work."""

log = logging.getLogger("relay.telemetry")
tracer = trace.get_tracer("relay")
_project: ContextVar[str | None] = ContextVar("relay_project_id", default=None)
_setup: dict[str, Any] = {"tracing": False, "region": None, "instrumentors": []}


# ---------------------------------------------------------------------------------------------------------------
# Scrubbing: what may leave the process in a span.

# A path segment survives only as a route word (`interactions`, `api-keys`, `v1`) or a template
# placeholder (`{project_id}`); anything else — ids, keys, names, emails, typos — becomes `{id}`.
_VALUE_SEGMENT = re.compile(r"/(?!(?:[a-z][a-z_-]{0,39}|v\d{1,2}|\{\w+(?::\w+)?\})(?:/|$))[^/]+")
_EMAIL = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+\.[A-Za-z]{2,}")
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?![\d.])")
_SQL_STRING = re.compile(r"(?:[EeBbXxNn]|[Uu]&)?'(?:[^']|'')*'|\$(\w*)\$.*?\$\1\$", re.DOTALL)
_SQL_NUMBER = re.compile(r"(?<![\w$.])-?\d+(?:\.\d+)?(?![\w.])")
_SPAN_NAME_PATH = re.compile(r"^([A-Z_]+ )(/\S*)$")

# Keys never exported: who the client is, what it sent besides the route, and bound values.
_DROP_KEYS = frozenset({
    "http.user_agent", "http.client_ip", "http.server_name", "http.host", "net.peer.ip", "net.sock.peer.addr",
    "net.sock.host.addr", "url.query", "db.statement.parameters", "http.request.body", "http.response.body",
    "exception.message", "exception.stacktrace",
})
_DROP_PREFIXES = ("http.request.header.", "http.response.header.", "enduser.", "user.", "user_agent.",
                  "client.", "source.", "db.query.parameter.", "messaging.message.body", "baggage.")
_URL_KEYS = frozenset({"http.url", "url.full"})
_PATH_KEYS = frozenset({"http.target", "url.path", "http.route", "url.template"})
_SQL_KEYS = frozenset({"db.statement", "db.query.text"})
_SERVER_PEER_KEYS = ("net.peer.port", "net.peer.name", "network.peer.port", "net.sock.peer.port")
_EVENT_KEYS = frozenset({"exception.type", "exception.escaped"})


def path_template(path: str) -> str:
    """A path with every segment that is not a route word replaced by `{id}`, without its query: what a
    span or a log line may carry of a URL (`/v1/projects/{id}/interactions/{id}`)."""
    return _VALUE_SEGMENT.sub("/{id}", path.split("?", 1)[0])


def _drop(key: str) -> bool:
    lowered = key.lower()
    return (key in _DROP_KEYS or key.startswith(_DROP_PREFIXES) or "client" in lowered or "email" in lowered
            or lowered.endswith((".ip", "address", ".addr")))


def _origin(url: str) -> str:
    """`scheme://host[:port]` of a URL: paths (webhook secrets live there) and queries go."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return ""
    host = re.split(r"[/?#]", rest, maxsplit=1)[0].rpartition("@")[2]  # and never userinfo
    return f"{scheme}://{host}"


def _truncate_ip(match: re.Match[str]) -> str:
    return f"{match.group(1)}.{match.group(2)}.{match.group(3)}.0"


def redact(value: str) -> str:
    """A string value with email addresses replaced and IP addresses truncated (IPv4 /24, IPv6 /48)."""
    value = _EMAIL.sub("[email]", value)
    if "." in value:
        value = _IPV4.sub(_truncate_ip, value)
    if ":" in value and value.count(":") >= 2:
        try:
            address = ipaddress.ip_address(value.strip("[]"))
        except ValueError:
            pass
        else:
            value = str(ipaddress.ip_network(f"{address}/48", strict=False).network_address)
    return value


def scrub_sql(statement: str) -> str:
    """A SQL statement with its literals replaced by `?`: placeholders stay, inlined values go."""
    return _SQL_NUMBER.sub("?", _SQL_STRING.sub("?", statement))


def _scrub_value(value: AttributeValue) -> AttributeValue:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Sequence) and not isinstance(value, bytes) and value and isinstance(value[0], str):
        return [redact(v) if isinstance(v, str) else "" for v in value]
    return value


def scrub_attributes(attributes: Attributes | Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """The attributes that may be exported, reduced to what the no-PII rule allows."""
    out: dict[str, AttributeValue] = {}
    for key, value in (attributes or {}).items():
        if _drop(key):
            continue
        if isinstance(value, str):
            if key in _URL_KEYS:
                value = _origin(value)
            elif key in _PATH_KEYS:
                value = path_template(value)
            elif key in _SQL_KEYS:
                value = scrub_sql(value)
        out[key] = _scrub_value(value)
    return out


def scrub_name(name: str) -> str:
    """A span name like `GET /v1/projects/<uuid>/x?y=z` reduced to its route template."""
    match = _SPAN_NAME_PATH.match(name)
    if match:
        return match.group(1) + path_template(match.group(2))
    return redact(name)


def scrub_span(span: ReadableSpan) -> ReadableSpan:
    """A copy of a finished span fit for export: name, attributes, events, links and status scrubbed."""
    events = [Event(redact(e.name), {k: v for k, v in (e.attributes or {}).items() if k in _EVENT_KEYS},
                    e.timestamp) for e in span.events]
    links = [Link(link.context, None) for link in span.links]
    status = Status(span.status.status_code)  # without its description: an exception's message
    attributes = scrub_attributes(span.attributes)
    if span.kind is SpanKind.SERVER:  # the peer of a server is its client
        for key in _SERVER_PEER_KEYS:
            attributes.pop(key, None)
    return ReadableSpan(
        name=scrub_name(span.name), context=span.context, parent=span.parent, resource=span.resource,
        attributes=attributes, events=events, links=links, kind=span.kind,
        status=status, start_time=span.start_time, end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class ScrubbingExporter(SpanExporter):
    """Export through `inner` only what `scrub_span` leaves of each span."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrub_span(s) for s in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


# ---------------------------------------------------------------------------------------------------------------
# Export.


class JsonLinesExporter(SpanExporter):
    """Append finished spans to a file, one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps(_as_json(s), default=str) for s in spans]
        with self._lock, open(self.path, "a") as f:
            f.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS


def _as_json(s: ReadableSpan) -> dict[str, Any]:
    return {
        "name": s.name, "trace_id": f"{s.context.trace_id:032x}" if s.context else None,
        "span_id": f"{s.context.span_id:016x}" if s.context else None,
        "parent_id": f"{s.parent.span_id:016x}" if s.parent else None,
        "kind": s.kind.name, "status": s.status.status_code.name,
        "attributes": dict(s.attributes or {}), "resource": dict(s.resource.attributes),
        "events": [{"name": e.name, "attributes": dict(e.attributes or {})} for e in s.events],
        "duration_ms": ((s.end_time or 0) - (s.start_time or 0)) / 1e6,
    }


class _Stamp(SpanProcessor):
    """Put `relay.region` and, when the caller is known, `relay.project_id` on every span as it starts."""

    def __init__(self, region: str) -> None:
        self.region = region

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        attributes = span.attributes or {}
        if "relay.region" not in attributes:
            span.set_attribute("relay.region", self.region)
        project = _project.get()
        if project and "relay.project_id" not in attributes:
            span.set_attribute("relay.project_id", project)


class _KeepRootClientSpansOut(Sampler):
    """Root spans of client libraries (a worker polling Redis, a relay loop reading the outbox) are noise:
    keep a client span only inside a trace, or when Relay itself opened it (`relay.*` attributes)."""

    def __init__(self, root: Sampler) -> None:
        self.root = root

    def should_sample(self, parent_context: otel_context.Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None, links: Sequence[Link] | None = None,
                      trace_state: Any = None) -> SamplingResult:
        if kind is SpanKind.CLIENT and not any(k.startswith("relay.") for k in attributes or {}):
            return SamplingResult(Decision.DROP)
        return self.root.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"KeepRootClientSpansOut{{{self.root.get_description()}}}"


def _sampler() -> Sampler:
    """Parent-based; roots by OTEL_TRACES_SAMPLER=traceidratio with OTEL_TRACES_SAMPLER_ARG, else all."""
    root: Sampler = ALWAYS_ON
    if os.environ.get("OTEL_TRACES_SAMPLER", "").endswith("traceidratio"):
        try:
            root = TraceIdRatioBased(float(os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")))
        except ValueError:
            root = ALWAYS_ON
    return ParentBased(root=_KeepRootClientSpansOut(root))


def _otlp_traces() -> bool:
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")) \
        and os.environ.get("OTEL_TRACES_EXPORTER", "otlp") != "none"


def tracing_configured() -> bool:
    """Whether this process exports spans (a trace file or an OTLP endpoint); decided by the environment."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    return bool(os.environ.get("RELAY_TRACE_FILE")) or _otlp_traces()


def tracing() -> bool:
    """Whether `setup` installed a tracer provider in this process."""
    return bool(_setup["tracing"])


def _instrument_libraries() -> None:
    """asyncpg, Redis and httpx through the official instrumentations (statements without bound values)."""
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    for instrumentor in (AsyncPGInstrumentor(capture_parameters=False),  # type: ignore[no-untyped-call]
                         RedisInstrumentor(),
                         HTTPXClientInstrumentor()):
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()
            _setup["instrumentors"].append(instrumentor)


def setup(service: str, region: str | None = None) -> trace.Tracer:
    """Configure JSON logging, metrics and (when an exporter is configured) tracing; returns the tracer."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, region))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("RELAY_LOG_LEVEL", "INFO").upper())
    for chatty in ("httpx", "httpcore", "saq"):  # per-request lines that name URLs: warnings only
        logging.getLogger(chatty).setLevel(logging.WARNING)
    metrics.setup(service, region)
    _setup["region"] = region or GLOBAL
    if tracing_configured() and not _setup["tracing"]:
        # With nowhere to export to, no SDK provider is installed: spans stay no-ops and cost nothing.
        attributes: dict[str, str] = {"service.name": f"relay-{service}"}
        if region:
            attributes["relay.region"] = region
        provider = TracerProvider(resource=Resource.create(attributes), sampler=_sampler())
        provider.add_span_processor(_Stamp(region or GLOBAL))
        trace_file = os.environ.get("RELAY_TRACE_FILE")
        if trace_file:
            provider.add_span_processor(BatchSpanProcessor(ScrubbingExporter(JsonLinesExporter(trace_file)),
                                                           schedule_delay_millis=200))
        if _otlp_traces():
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(ScrubbingExporter(OTLPSpanExporter())))
        trace.set_tracer_provider(provider)
        _setup["tracing"] = True
        _instrument_libraries()
    return tracer


def shutdown() -> None:
    """Flush pending spans and metrics (on process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
    metrics.shutdown()


# ---------------------------------------------------------------------------------------------------------------
# Logs.


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the service's identity and the current trace on every line."""

    def __init__(self, service: str, region: str | None) -> None:
        super().__init__()
        self.service = service
        self.region = region

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "service": self.service, "logger": record.name,
            "message": record.getMessage(),
        }
        if self.region:
            out["relay.region"] = self.region
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = f"{span.trace_id:032x}"
            out["span_id"] = f"{span.span_id:016x}"
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


# ---------------------------------------------------------------------------------------------------------------
# Propagation through the outbox, and the worker's side of it.


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the current span, for work that continues later (an outbox row)."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


@contextlib.contextmanager
def job_span(name: str, carrier: str | Mapping[str, Any] | None, region: str | None = None,
             project_id: object = None) -> Iterator[trace.Span]:
    """Run one job inside a span that continues the trace of the request that queued it.

    `carrier` is the `traceparent` string the outbox row carried (or a mapping with a `traceparent` key,
    such as a payload); None starts a new trace. The span is named `job <name>` and carries `relay.job`,
    `relay.region` and `relay.project_id`; inside it, asyncpg/Redis/httpx spans and outbox rows written
    by the job belong to the same trace. An exception is recorded (type only, once exported) and re-raised.
    Without a tracer provider this costs a context-variable set and reset.
    """
    project = str(project_id) if project_id else None
    token = _project.set(project)
    try:
        if not _setup["tracing"]:
            yield trace.INVALID_SPAN
            return
        traceparent = carrier.get("traceparent") if isinstance(carrier, Mapping) else carrier
        parent = propagate.extract({"traceparent": traceparent}) if isinstance(traceparent, str) else None
        attributes: dict[str, AttributeValue] = {"relay.job": name,
                                                 "relay.region": region or _setup["region"] or GLOBAL}
        if project:
            attributes["relay.project_id"] = project
        with tracer.start_as_current_span(f"job {name}", context=parent, kind=SpanKind.CONSUMER,
                                          attributes=attributes) as span:
            yield span
    finally:
        _project.reset(token)


# ---------------------------------------------------------------------------------------------------------------
# HTTP servers (the cell, the router's control plane).

Scope = MutableMapping[str, Any]
ASGIApp = Callable[..., Any]
_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
_EXCLUDED = re.compile(r"^[a-z]+://[^/]*/(?:healthz|readyz|metrics)$")
_TEMPLATE_TYPES = re.compile(r"\{(\w+):\w+\}")
_templates: dict[str, str] = {}


def route_of(scope: Scope) -> str:
    """The route template Litestar matched (`/v1/projects/{project_id}/…`), or `unmatched`: never a raw path."""
    raw: str | None = scope.get("path_template")
    if not raw:
        return "unmatched"
    template = _templates.get(raw)
    if template is None:
        template = _templates[raw] = _TEMPLATE_TYPES.sub(r"{\1}", raw) if len(_templates) < 4096 else "other"
    return template


class _Excluded:
    """Health checks and scrapes make no spans."""

    def url_disabled(self, url: str) -> bool:
        return bool(_EXCLUDED.match(url))


def _span_details(scope: Scope) -> tuple[str, dict[str, Any]]:
    return str(scope.get("method", "HTTP")), {}


def _server_hook(span: trace.Span, scope: Scope) -> None:
    actor = (scope.get("state") or {}).get("actor")
    project = getattr(actor, "project_id", None)
    if project and span.is_recording():
        span.set_attribute("relay.project_id", str(project))


Recorder = Callable[[Scope, int, float, "str | None"], None]
"""Called once per request with the scope (routed: `route_of(scope)` works), status, seconds and project id."""


class HttpServerTelemetry:
    """Server spans (when tracing) and one `record` call per request with its route, status and duration.

    In the cell it sits inside HopMiddleware, so unsigned requests are refused before anything here runs
    and the caller's project is known (`relay.project_id` on the server span and every span under it).
    Spans come from the official ASGI middleware, without per-event send/receive spans and without
    metrics of its own; the span is renamed `METHOD <route template>` when the response starts. With
    `trust_incoming=False` (a public endpoint) a caller's trace context is ignored.
    """

    def __init__(self, app: ASGIApp, record: Recorder, *, trust_incoming: bool = True) -> None:
        self.inner = app
        self.record = record
        self.trust_incoming = trust_incoming
        self.app: ASGIApp = self._measured
        if tracing_configured():
            from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
            from opentelemetry.metrics import NoOpMeterProvider

            self.app = OpenTelemetryMiddleware(
                self._measured, excluded_urls=_Excluded(),  # type: ignore[arg-type]
                default_span_details=_span_details, server_request_hook=_server_hook,
                meter_provider=NoOpMeterProvider(), exclude_spans=["receive", "send"])

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        if not self.trust_incoming and self.app is not self._measured:
            # A public endpoint: the trace starts here, whatever trace context the caller sent.
            scope = {**scope, "headers": [h for h in scope["headers"] if h[0] not in _TRACE_HEADERS]}
        await self.app(scope, receive, send)

    async def _measured(self, scope: Scope, receive: Any, send: Any) -> None:
        started = metrics.clock()
        status = 500
        span = trace.get_current_span()
        actor = (scope.get("state") or {}).get("actor")
        found = getattr(actor, "project_id", None)
        project = str(found) if found else None
        token = _project.set(project) if project else None

        async def observed(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                if span.is_recording():
                    template = route_of(scope)
                    span.update_name(f"{scope['method']} {template}")
                    span.set_attribute("http.route", template)
            await send(message)

        try:
            await self.inner(scope, receive, observed)
        finally:
            if token is not None:
                _project.reset(token)
            self.record(scope, status, metrics.clock() - started, project)
