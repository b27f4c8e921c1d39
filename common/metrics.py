"""Metrics for every Relay process: request rates, latencies and errors, gauges, job outcomes.

Everything is exported through the OpenTelemetry metrics SDK: to a Prometheus
scrape endpoint (`GET /metrics` on the router and on each cell API, rendered by
`render`; a worker serves one on RELAY_METRICS_PORT when set) and, when
OTEL_EXPORTER_OTLP_ENDPOINT is configured, over OTLP/HTTP. Every series carries
`relay_region` (`global` for the router's own work).

Per-request numbers are on the router's hot path, where the SDK's synchronous
instruments would cost some 10-20 µs a request (locks, attribute sets,
exemplars). They are therefore kept in `Timings` and `Counts`: plain ints in
dicts, updated from the event loop without locks or allocations beyond the
label tuple, and turned into OpenTelemetry histogram and sum points only when
a reader collects. Series are capped per instrument (the overflow is folded
into an `other` series), so no client-chosen value can grow memory without
bound. Gauges (breaker states, in-flight requests, pool use, queue depth,
outbox backlog) are observable instruments read at collection time; those that
need I/O use a `Probe`, refreshed at most every few seconds.

Labels are the route template or route class, method, status, region, job
name, and — only on the cells' per-project request counters — the project id
(the router, in front of every region, carries none). Never a raw path, a
query, a user identifier or an address.

`GET /metrics` answers only a scraper holding `RELAY_METRICS_TOKEN` (a bearer
token); a worker's own endpoint (RELAY_METRICS_PORT) is a separate port bound
to loopback unless RELAY_METRICS_HOST says otherwise.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from litestar import Request, Response, get
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricReader,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from common.problems import Problem
from common.settings import SettingsError

log = logging.getLogger("relay.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The media type of `render`'s output (Prometheus text format 0.0.4)."""
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
"""Histogram bounds in seconds: a millisecond proxy hop up to a five-minute job."""
GLOBAL = "global"
OTHER = "other"
clock = time.perf_counter
_CLASSES = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
_SCOPE = InstrumentationScope("relay.timings")  # not the gauges' meter "relay": OTLP merges by scope
_START_NS = time.time_ns()


def status_class(status: int) -> str:
    """`2xx`, `4xx`, …: the status as the per-project counters carry it."""
    index = status // 100
    return _CLASSES[index] if 1 <= index <= 5 else OTHER


def server_error(index: int) -> Callable[[tuple[Any, ...]], bool]:
    """The `failed` test of request timings whose label `index` is the status: 5xx (not the `other` series)."""
    return lambda key: isinstance(key[index], int) and key[index] >= 500


def _overflow(key: tuple[Any, ...]) -> tuple[Any, ...]:
    return (key[0], *([OTHER] * (len(key) - 1)))


class Timings:
    """Durations per label set: a request counter, an error counter and a histogram, from one record call.

    `record` runs on the event loop only; readers (a scrape, the OTLP thread) take copies. The first label
    is the region and survives the series cap, the others become `other` past it.
    """

    def __init__(self, *, count: str, duration: str, errors: str, labels: tuple[str, ...], description: str,
                 failed: Callable[[tuple[Any, ...]], bool], max_series: int = 2000,
                 buckets: tuple[float, ...] = BUCKETS) -> None:
        self.count_name, self.duration_name, self.errors_name = count, duration, errors
        self.labels = labels
        self.description = description
        self.failed = failed
        self.max_series = max_series
        self.buckets = buckets
        self._series: dict[tuple[Any, ...], list[Any]] = {}

    def record(self, key: tuple[Any, ...], seconds: float) -> None:
        """Count one observation of `seconds` under `key` (values in the order of `labels`)."""
        series = self._series.get(key)
        if series is None:
            series = self._new(key)
        series[0] += 1
        series[1] += seconds
        series[2][bisect_left(self.buckets, seconds)] += 1
        if seconds < series[3]:
            series[3] = seconds
        if seconds > series[4]:
            series[4] = seconds

    def _new(self, key: tuple[Any, ...]) -> list[Any]:
        if len(self._series) >= self.max_series:
            key = _overflow(key)
            found = self._series.get(key)
            if found is not None:
                return found
        series = self._series[key] = [0, 0.0, [0] * (len(self.buckets) + 1), float("inf"), 0.0]
        return series

    def snapshot(self) -> list[tuple[tuple[Any, ...], int, float, list[int], float, float]]:
        """A consistent-enough copy of every series: (key, count, sum, buckets, min, max)."""
        return [(k, s[0], s[1], list(s[2]), s[3], s[4]) for k, s in list(self._series.items())]

    def points(self, now: int) -> list[Metric]:
        """The request counter, error counter and duration histogram as OpenTelemetry metric data."""
        counts: list[NumberDataPoint] = []
        errors: list[NumberDataPoint] = []
        histogram: list[HistogramDataPoint] = []
        for key, count, total, buckets, low, high in self.snapshot():
            attributes = dict(zip(self.labels, key, strict=True))
            counts.append(NumberDataPoint(attributes, _START_NS, now, count))
            if self.failed(key):
                errors.append(NumberDataPoint(attributes, _START_NS, now, count))
            histogram.append(HistogramDataPoint(attributes, _START_NS, now, count, total, buckets, self.buckets,
                                                low, high))
        cumulative = AggregationTemporality.CUMULATIVE
        return [
            Metric(self.count_name, f"{self.description}: how many", "", Sum(counts, cumulative, True)),
            Metric(self.errors_name, f"{self.description}: how many failed", "", Sum(errors, cumulative, True)),
            Metric(self.duration_name, f"{self.description}: how long", "s", Histogram(histogram, cumulative)),
        ]


class Counts:
    """A monotonic counter per label set, lock-free like `Timings` (and capped the same way)."""

    def __init__(self, name: str, labels: tuple[str, ...], description: str, max_series: int = 10_000) -> None:
        self.name = name
        self.labels = labels
        self.description = description
        self.max_series = max_series
        self._values: dict[tuple[Any, ...], int] = {}

    def add(self, key: tuple[Any, ...], amount: int = 1) -> None:
        """Add `amount` under `key` (values in the order of `labels`)."""
        values = self._values
        if key not in values and len(values) >= self.max_series:
            key = _overflow(key)
        values[key] = values.get(key, 0) + amount

    def points(self, now: int) -> list[Metric]:
        """The counter as OpenTelemetry metric data."""
        data = [NumberDataPoint(dict(zip(self.labels, k, strict=True)), _START_NS, now, v)
                for k, v in list(self._values.items())]
        return [Metric(self.name, self.description, "", Sum(data, AggregationTemporality.CUMULATIVE, True))]


Source = Callable[[], Iterable[tuple[float, dict[str, Any]]]]


class Probe:
    """Gauge values that take I/O to read (a count in Postgres, a length in Redis): read by `read` at most
    every `ttl` seconds, before a scrape or by a background refresher, and served from the cache otherwise.
    A failed read keeps the last values (and logs at debug level)."""

    def __init__(self, read: Callable[[], Awaitable[list[tuple[float, dict[str, Any]]]]], ttl: float = 5.0) -> None:
        self.read = read
        self.ttl = ttl
        self.values: list[tuple[float, dict[str, Any]]] = []
        self._at = -float("inf")
        self._running: asyncio.Task[None] | None = None

    async def refresh(self) -> None:
        """Read again if the values are older than `ttl`; concurrent callers share one read."""
        if clock() - self._at < self.ttl:
            return
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self._read())
        await asyncio.shield(self._running)

    async def _read(self) -> None:
        try:
            self.values = await asyncio.wait_for(self.read(), 2.0)
            self._at = clock()
        except Exception as exc:  # noqa: BLE001 - a gauge that cannot be read keeps its last value
            log.debug("metrics probe failed: %s", type(exc).__name__)

    def __call__(self) -> list[tuple[float, dict[str, Any]]]:
        return self.values


# The process's instruments: created at import by the modules that record them, exported once `setup` ran.
_timings: dict[str, Timings] = {}
_counts: dict[str, Counts] = {}
_sources: dict[str, Source] = {}
_gauges: dict[str, tuple[str, str]] = {}
_probes: dict[str, Probe] = {}
_state: dict[str, Any] = {"region": GLOBAL, "provider": None, "registry": None, "resource": None}


def timings(**kwargs: Any) -> Timings:
    """The process's `Timings` named `kwargs["duration"]` (created on first use; see `Timings`)."""
    found = _timings.get(kwargs["duration"])
    if found is None:
        found = _timings[kwargs["duration"]] = Timings(**kwargs)
    return found


def counts(name: str, labels: tuple[str, ...], description: str) -> Counts:
    """The process's `Counts` named `name` (created on first use)."""
    found = _counts.get(name)
    if found is None:
        found = _counts[name] = Counts(name, labels, description)
    return found


def gauge(name: str, description: str, source: Source, unit: str = "") -> None:
    """Export what `source()` returns — (value, attributes) pairs — as the gauge `name` at each collection.

    Registering a name again replaces its source (a new app in the same process).
    """
    _sources[name] = source
    if name not in _gauges:
        _gauges[name] = (description, unit)
        if _state["provider"] is not None:
            _observe(_state["provider"], name)
    if isinstance(source, Probe):
        _probes[name] = source
    else:
        _probes.pop(name, None)


def _observe(provider: MeterProvider, name: str) -> None:
    description, unit = _gauges[name]

    def callback(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(value, attributes) for value, attributes in _sources[name]()]
        except Exception as exc:  # noqa: BLE001 - one broken gauge must not break the scrape
            log.debug("gauge %s failed: %s", name, type(exc).__name__)
            return []

    provider.get_meter("relay").create_observable_gauge(name, [callback], unit=unit, description=description)


async def refresh() -> None:
    """Bring every `Probe` up to date (called before rendering a scrape)."""
    await asyncio.gather(*(probe.refresh() for probe in list(_probes.values())))


async def keep_fresh(period: float = 15.0) -> None:
    """Refresh the probes forever: for processes that export over OTLP without being scraped."""
    while True:
        await refresh()
        await asyncio.sleep(period)


def region() -> str:
    """The region this process serves (`global` for the router)."""
    return str(_state["region"])


def _ours() -> list[Metric]:
    now = time.time_ns()
    out: list[Metric] = []
    for t in list(_timings.values()):
        out.extend(t.points(now))
    for c in list(_counts.values()):
        out.extend(c.points(now))
    return out


def _with_ours(data: MetricsData | None) -> MetricsData:
    ours = ScopeMetrics(_SCOPE, _ours(), "")
    resource_metrics = list(data.resource_metrics) if data is not None else []
    if resource_metrics:
        first = resource_metrics[0]
        resource_metrics[0] = ResourceMetrics(first.resource, [*first.scope_metrics, ours], first.schema_url)
    else:
        resource_metrics = [ResourceMetrics(_state["resource"] or Resource.get_empty(), [ours], "")]
    return MetricsData(resource_metrics)


def _prometheus_reader(registry: CollectorRegistry) -> MetricReader:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    class Reader(PrometheusMetricReader):
        def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                             **kwargs: Any) -> None:
            super()._receive_metrics(_with_ours(metrics_data), timeout_millis, **kwargs)

    return Reader(scope_info_enabled=False, registry=registry)


def _otlp_reader() -> MetricReader:
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    class Reader(PeriodicExportingMetricReader):
        def _receive_metrics(self, metrics_data: MetricsData, timeout_millis: float = 10_000,
                             **kwargs: Any) -> None:
            super()._receive_metrics(_with_ours(metrics_data), timeout_millis, **kwargs)

    return Reader(OTLPMetricExporter())


def otlp_configured() -> bool:
    """Whether metrics also go out over OTLP (OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT, not disabled)."""
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")
    return bool(endpoint) and os.environ.get("OTEL_METRICS_EXPORTER", "otlp") != "none"


def setup(service: str, region: str | None = None) -> None:
    """Start this process's metrics pipeline: the Prometheus reader, OTLP when configured, and a scrape
    endpoint of its own on RELAY_METRICS_PORT when set (for the worker, which serves no HTTP)."""
    shutdown()
    _state["region"] = region or GLOBAL
    attributes = {"service.name": f"relay-{service}", "relay.region": region or GLOBAL}
    resource = Resource.create(attributes)
    registry = CollectorRegistry()
    readers: list[MetricReader] = [_prometheus_reader(registry)]
    if otlp_configured():
        readers.append(_otlp_reader())
    provider = MeterProvider(metric_readers=readers, resource=resource)
    _sources["relay.uptime"] = _uptime  # at least one SDK instrument, so every collection reaches the readers
    _gauges.setdefault("relay.uptime", ("Seconds since this process started", "s"))
    for name in _gauges:
        _observe(provider, name)
    _state.update(provider=provider, registry=registry, resource=resource)
    port = os.environ.get("RELAY_METRICS_PORT")
    if port:
        start_http_server(int(port), addr=os.environ.get("RELAY_METRICS_HOST", "127.0.0.1"), registry=registry)


def _uptime() -> list[tuple[float, dict[str, Any]]]:
    return [((time.time_ns() - _START_NS) / 1e9, {"relay.region": region()})]


def shutdown() -> None:
    """Flush OTLP and stop exporting (on process exit, or before `setup` runs again)."""
    provider: MeterProvider | None = _state["provider"]
    if provider is not None:
        _state["provider"] = None
        provider.shutdown()


def render() -> bytes:
    """This process's metrics in the Prometheus text format (sets up a default pipeline if none ran)."""
    if _state["registry"] is None or _state["provider"] is None:
        setup("relay", None if _state["region"] == GLOBAL else _state["region"])
    data: bytes = generate_latest(_state["registry"])
    return data


JOBS = timings(count="relay.worker.jobs", duration="relay.worker.job.duration", errors="relay.worker.job.failures",
               labels=("relay.region", "relay.job", "outcome"), description="Worker jobs run, per job type",
               failed=lambda key: key[2] == "failed")


def record_job(name: str, seconds: float, ok: bool) -> None:
    """Count one run of the job `name` (a consumer name, e.g. `webhooks.interaction.created`, or a cron's
    name) that took `seconds` and succeeded or not; the worker calls it after every attempt."""
    JOBS.record((_state["region"], name, "ok" if ok else "failed"), seconds)


def pool_usage(pool: Any, region_label: str) -> list[tuple[float, dict[str, Any]]]:
    """An asyncpg pool's connections in use and idle, as gauge values (`state` busy|idle)."""
    if pool is None:
        return []
    size, idle = pool.get_size(), pool.get_idle_size()
    return [(size - idle, {"relay.region": region_label, "state": "busy"}),
            (idle, {"relay.region": region_label, "state": "idle"}),
            (pool.get_max_size(), {"relay.region": region_label, "state": "max"})]


def families(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Parse Prometheus text into {sample name: [(labels, value)]} (for tests and `relay` tooling)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return out



METRICS_TOKEN = "RELAY_METRICS_TOKEN"  # noqa: S105 (the variable's name, not a token)
MIN_TOKEN = 16


def scrape_route(token: str | None = None) -> Any:
    """`GET /metrics` for a Litestar app: the probes refreshed (at most every few seconds), then `render()`.

    Served only to a scraper presenting `Authorization: Bearer <RELAY_METRICS_TOKEN>` (401 otherwise); with no
    token configured there is no endpoint (404). Traffic shapes, breaker states and queue depths tell an
    attacker when and where to push, so they are not public. `token` defaults to the environment's, checked
    here, when the app is built: a token under MIN_TOKEN characters stops the process at start.
    """
    expected = os.environ.get(METRICS_TOKEN, "") if token is None else token
    if expected and len(expected) < MIN_TOKEN:
        raise SettingsError(f"{METRICS_TOKEN}: must be at least {MIN_TOKEN} characters")
    wanted = f"Bearer {expected}".encode()

    @get("/metrics", include_in_schema=False)
    async def scrape(request: Request[Any, Any, Any]) -> Response[bytes]:
        if not expected:
            raise Problem(404, f"metrics are served only when {METRICS_TOKEN} is set")
        presented = request.headers.get("authorization", "").encode("latin-1", "replace")
        if not hmac.compare_digest(presented, wanted):
            raise Problem(401, "send the metrics token as Authorization: Bearer <token>",
                          headers={"WWW-Authenticate": "Bearer"})
        await refresh()
        return Response(render(), media_type=CONTENT_TYPE)

    return scrape
