"""Logs and traces for every Relay process, with the no-PII rule built in.

Logs are JSON lines on stderr (one object per record: time, level, service,
region, logger, message and any `extra` fields). Traces use the OpenTelemetry
SDK; spans are exported to a JSON-lines file when RELAY_TRACE_FILE is set (tests
and local debugging read it) and not at all otherwise — the OTLP exporter is an
operator's deployment choice. What goes into a log record or a span attribute
is decided at each call site: method, route template, status, duration, region,
project id, key prefix — never a body, an end-user identifier or a full IP.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, with the service's identity on every line."""

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
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class JsonLinesExporter(SpanExporter):
    """Append finished spans to a file, one JSON object per line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = [json.dumps({"name": s.name, "trace_id": f"{s.context.trace_id:032x}" if s.context else None,
                             "attributes": dict(s.attributes or {}),
                             "resource": dict(s.resource.attributes),
                             "duration_ms": ((s.end_time or 0) - (s.start_time or 0)) / 1e6}, default=str)
                 for s in spans]
        with self._lock, open(self.path, "a") as f:
            f.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS


def setup(service: str, region: str | None = None) -> trace.Tracer:
    """Configure JSON logging and tracing for this process; returns its tracer."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service, region))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("RELAY_LOG_LEVEL", "INFO").upper())
    for chatty in ("httpx", "httpcore", "saq"):  # per-request lines that name URLs: warnings only
        logging.getLogger(chatty).setLevel(logging.WARNING)
    trace_file = os.environ.get("RELAY_TRACE_FILE")
    if trace_file:
        # With nowhere to export to, no SDK provider is installed: spans stay no-ops and cost nothing.
        attributes: dict[str, str] = {"service.name": f"relay-{service}"}
        if region:
            attributes["relay.region"] = region
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(JsonLinesExporter(trace_file), schedule_delay_millis=200))
        trace.set_tracer_provider(provider)
    return trace.get_tracer("relay")


def shutdown() -> None:
    """Flush pending spans (on process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()
