"""Replay processing's checks without the stack: gaps in the chunk indexes, chunk objects read back within
the ingest limits, and the index rebuilt from what the objects hold."""

from __future__ import annotations

import asyncio
import gzip
import uuid
from typing import Any

import msgspec
import pytest

from cell.replays import events
from cell.replays.processing import Corrupt, Failed, Verified, check, examine, gap
from cell.storage import ObjectStore, project_key

T0 = 1_760_000_000_000


def _events(start: int, n: int, step: int = 10) -> list[dict[str, Any]]:
    return [{"type": 3, "timestamp": start + i * step, "data": {"i": i}} for i in range(n)]


def test_gap_needs_indexes_from_zero_without_holes() -> None:
    assert gap([0]) is None
    assert gap([2, 0, 1]) is None
    assert gap([]) == "no events: no chunk was uploaded"
    assert gap([0, 1, 3]) == ("missing chunk 2: chunk indexes must run from 0 without gaps "
                              "(3 uploaded, the highest is 3)")
    assert (gap([1, 2]) or "").startswith("missing chunk 0:")


def test_check_reads_a_chunk_as_ingest_stored_it() -> None:
    sent = _events(T0, 4)[::-1]
    stored = events.prepare(msgspec.json.encode(sent))
    again = check(0, stored.gz)
    assert again == stored  # the canonical form reads back unchanged: nothing to rewrite
    assert (again.event_count, again.start_time, again.end_time) == (4, T0, T0 + 30)


@pytest.mark.parametrize(("gz", "reason"), [
    (b"definitely not gzip", "corrupt chunk 7: the object is not valid gzip"),
    (gzip.compress(b"[" + b'{"type": 3, "timestamp": 1},' * 50 + b"{}]", mtime=0)[:-12],
     "corrupt chunk 7: the object is truncated"),
    (gzip.compress(b"[]", mtime=0) + b"junk", "corrupt chunk 7: unexpected bytes after the gzip stream"),
    (gzip.compress(b"[{not json", mtime=0), "corrupt chunk 7: the object is not a JSON array of events"),
    (gzip.compress(b'{"events": []}', mtime=0), "corrupt chunk 7: Expected `array`, got `object` (at /)"),
    (gzip.compress(b"[]", mtime=0), "corrupt chunk 7: expected at least one event (at /)"),
    (gzip.compress(b'[{"type": 3, "timestamp": 5}, {"type": 3}]', mtime=0),
     "corrupt chunk 7: expected a number of milliseconds since the epoch (at /1/timestamp)"),
    (gzip.compress(b"[" + b" " * (events.MAX_JSON_BYTES + 1) + b"]", compresslevel=9, mtime=0),
     f"corrupt chunk 7: over {events.MAX_JSON_BYTES} bytes decompressed"),
])
def test_check_names_what_is_wrong(gz: bytes, reason: str) -> None:
    with pytest.raises(Corrupt) as caught:
        check(7, gz)
    assert str(caught.value) == reason


def _index(project_id: uuid.UUID, replay_id: uuid.UUID, i: int, **figures: Any) -> dict[str, Any]:
    key = project_key(project_id, "replays", str(replay_id), "chunks", f"{i:06d}.json.gz")
    return {"index": i, "storageKey": key, "eventCount": 1, "startTime": 0, "endTime": 0, **figures}


def test_examine_rebuilds_the_index_from_the_objects() -> None:
    store = ObjectStore("memory://")
    pid, rid = uuid.uuid4(), uuid.uuid4()
    c0 = events.prepare(msgspec.json.encode(_events(T0, 3)))
    unsorted = _events(T0 + 500, 2)[::-1]
    index = [_index(pid, rid, 1), _index(pid, rid, 0, eventCount=3, startTime=T0, endTime=T0 + 20)]

    async def run() -> Verified | Failed:
        await store.put(index[1]["storageKey"], c0.gz)
        # Valid events, but not as ingest stores them (out of time order): processing must rewrite it.
        await store.put(index[0]["storageKey"], gzip.compress(msgspec.json.encode(unsorted)))
        return await examine(store, index)

    out = asyncio.run(run())
    assert isinstance(out, Verified)
    assert out.rewrite == [1]
    assert out.chunks == [
        {"index": 0, "storageKey": index[1]["storageKey"], "eventCount": 3, "startTime": T0, "endTime": T0 + 20},
        {"index": 1, "storageKey": index[0]["storageKey"], "eventCount": 2, "startTime": T0 + 500,
         "endTime": T0 + 510},
    ]


def test_examine_fails_on_the_first_bad_chunk() -> None:
    store = ObjectStore("memory://")
    pid, rid = uuid.uuid4(), uuid.uuid4()
    index = [_index(pid, rid, i) for i in range(3)]

    async def run() -> list[Verified | Failed]:
        await store.put(index[0]["storageKey"], events.prepare(msgspec.json.encode(_events(T0, 1))).gz)
        missing = await examine(store, index)
        await store.put(index[1]["storageKey"], b"\x1f\x8b garbage")
        corrupt = await examine(store, index)
        return [missing, corrupt, await examine(store, index[:1] + index[2:]), await examine(store, [])]

    missing, corrupt, holed, empty = asyncio.run(run())
    assert missing == Failed("missing chunk 1: its object is not in storage")
    assert corrupt == Failed("corrupt chunk 1: the object is not valid gzip")
    assert isinstance(holed, Failed) and holed.reason.startswith("missing chunk 1: chunk indexes must run")
    assert empty == Failed("no events: no chunk was uploaded")
