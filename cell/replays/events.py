"""rrweb events in and out: bounded decompression of uploaded chunks, their validation, and the merge
that streams a whole replay back one chunk at a time.
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import math
import zlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import msgspec

from cell.privacy import scrub
from cell.replays.scrubbing import scrub_events
from common.problems import FieldError, Problem, from_validation

MiB = 1024 * 1024
MAX_WIRE_BYTES = 5 * MiB
"""A chunk as sent (compressed or not)."""
MAX_JSON_BYTES = 50 * MiB
"""A chunk after decompression."""
MAX_TIMESTAMP = 253_402_300_800_000  # year 10000, in ms
MAX_REPORTED_ERRORS = 20


class TooLarge(Exception):
    """The chunk passed one of its limits."""


class Inflater:
    """gzip decompression fed piece by piece that stops as soon as the output passes `limit`.

    A few kilobytes of gzip can expand to gigabytes; output is produced at most
    `limit + 1` bytes at a time, so memory never holds more than the limit.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._z = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        self._out = bytearray()

    def feed(self, data: bytes) -> None:
        """Decompress one piece of the body (TooLarge past the limit, 400 when it is not gzip)."""
        try:
            while data:
                self._out += self._z.decompress(data, self.limit + 1 - len(self._out))
                if len(self._out) > self.limit:
                    raise TooLarge
                data = self._z.unconsumed_tail
        except zlib.error as exc:
            raise Problem(400, "the body is not valid gzip") from exc

    def result(self) -> bytes:
        """The whole decompressed body; a truncated stream or trailing bytes are malformed."""
        if not self._z.eof:
            raise Problem(400, "the gzip body is truncated")
        if self._z.unused_data:
            raise Problem(400, "unexpected bytes after the gzip stream")
        return bytes(self._out)


async def read_body(body: AsyncIterator[bytes], content_encoding: str | None) -> bytes:
    """The chunk's JSON bytes: at most MAX_WIRE_BYTES read, at most MAX_JSON_BYTES after gunzip."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding not in ("identity", "gzip", "x-gzip"):
        raise Problem(415, "Content-Encoding must be gzip or absent")
    inflater = Inflater(MAX_JSON_BYTES) if encoding != "identity" else None
    raw = bytearray()
    wire = 0
    async for piece in body:
        wire += len(piece)
        if wire > MAX_WIRE_BYTES:
            raise TooLarge
        if inflater is not None:
            inflater.feed(piece)
        else:
            raw += piece
    return inflater.result() if inflater is not None else bytes(raw)


@dataclass(frozen=True)
class Prepared:
    """A validated chunk ready to store: events sorted by timestamp, gzip-compressed."""

    gz: bytes
    event_count: int
    start_time: float
    end_time: float


def _bad_event(event: dict[str, Any], i: int) -> list[FieldError]:
    errors = []
    ts = event.get("timestamp")
    if isinstance(ts, bool) or not isinstance(ts, int | float) or not 0 <= ts < MAX_TIMESTAMP:
        errors.append(FieldError(f"/{i}/timestamp", "expected a number of milliseconds since the epoch"))
    kind = event.get("type")
    if isinstance(kind, bool) or not isinstance(kind, int):
        errors.append(FieldError(f"/{i}/type", "expected an integer rrweb event type"))
    return errors


def prepare(raw: bytes, rules: scrub.Rules | None = None, report: scrub.Report | None = None) -> Prepared:
    """Parse, check and scrub a chunk (a JSON array of rrweb events); CPU-bound, run it off the event loop.

    Ingest passes the project's privacy `rules`: what they redact is counted in `report`, and only the
    scrubbed events are kept. Processing re-checks stored chunks, scrubbed on the way in, with none.
    """
    try:
        events = msgspec.json.decode(raw, type=list[dict[str, Any]])
    except msgspec.ValidationError as exc:
        raise from_validation(str(exc)) from exc
    except msgspec.DecodeError as exc:
        raise Problem(400, "the body is not a JSON array of events") from exc
    if not events:
        raise Problem(422, "a chunk holds at least one event",
                      errors=[FieldError("", "expected at least one event")])
    errors: list[FieldError] = []
    for i, event in enumerate(events):
        errors.extend(_bad_event(event, i))
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
    if errors:
        raise Problem(422, "every event needs a numeric `timestamp` and an integer `type`", errors=errors)
    if rules is not None:
        events = scrub_events(rules, events, report)
    events.sort(key=itemgetter("timestamp"))  # stable: equal times keep the order they were sent in
    gz = gzip.compress(msgspec.json.encode(events), compresslevel=6, mtime=0)
    return Prepared(gz, len(events), events[0]["timestamp"], events[-1]["timestamp"])


class _Stamp(msgspec.Struct):
    timestamp: float


Stamped = tuple[float, msgspec.Raw]


def load(gz: bytes) -> list[Stamped]:
    """A stored chunk's events as (timestamp, the event's JSON untouched), in stored (time) order."""
    data = gzip.decompress(gz)
    stamps = msgspec.json.decode(data, type=list[_Stamp])
    raws = msgspec.json.decode(data, type=list[msgspec.Raw])
    return [(s.timestamp, raw) for s, raw in zip(stamps, raws, strict=True)]


def bounds(start_times: list[float]) -> list[float]:
    """For each chunk, the earliest start of any chunk after it (infinity for the last)."""
    out = [math.inf] * len(start_times)
    for i in range(len(start_times) - 2, -1, -1):
        out[i] = min(out[i + 1], start_times[i + 1])
    return out


class Merge:
    """Merges chunks, taken in index order, into one timestamp-ordered event stream.

    Each chunk is sorted; chunks may overlap in time. After adding a chunk, every
    event no later than the earliest start of the chunks still to come is final
    and is released; only the overlap is held back. Ties keep chunk order, then
    the order within the chunk.
    """

    def __init__(self) -> None:
        self._pending: list[Stamped] = []

    def add(self, events: Iterable[Stamped], bound: float) -> list[msgspec.Raw]:
        """Take one chunk's events; return those that can be released now."""
        merged = list(heapq.merge(self._pending, events, key=itemgetter(0)))
        cut = bisect.bisect_right(merged, bound, key=itemgetter(0))
        self._pending = merged[cut:]
        return [raw for _, raw in merged[:cut]]


def json_items(events: list[msgspec.Raw], first: bool) -> bytes:
    """Events as the inside of a JSON array, with the comma that joins them to what came before."""
    if not events:
        return b""
    inner = msgspec.json.encode(events)[1:-1]
    return inner if first else b"," + inner
