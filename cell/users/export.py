"""Exporting an end user: everything held about the person, as one zip archive.

`person.json` holds every row about them, read in one snapshot; the bytes
follow: their media under `media/{interaction id}/`, and the recordings of
their replays as stored (gzip JSON arrays of rrweb events, one per chunk)
under their keys in the project, `replays/{replay id}/chunks/…`; each media
and replay entry of `person.json` names its files. The archive is built in a spooled temporary file
(in memory up to a bound, then on the cell's local disk), so the bytes never
leave the cell except in the response to the authorised caller.
"""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import tempfile
import uuid
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import asyncpg
import msgspec

from cell.interactions.queries import COLUMNS as INTERACTION_COLUMNS
from cell.storage import ObjectStore, project_key
from cell.users import Footprint, footprint
from cell.users.erasure import replay_keys
from common.problems import Problem

FORMAT = "relay.end_user_export/1"
IN_MEMORY = 8 * 1024 * 1024
READ_SIZE = 256 * 1024


@dataclass
class Archive:
    """A finished archive, positioned at its start, and what it holds (counts only, for the audit)."""

    file: IO[bytes]
    size: int
    counts: dict[str, int]

    async def chunks(self) -> AsyncIterator[bytes]:
        """The archive's bytes, closing the file when done."""
        try:
            while chunk := await asyncio.to_thread(self.file.read, READ_SIZE):
                yield chunk
        finally:
            self.file.close()


def _rows(records: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [dict(r) for r in records]


async def person(conn: asyncpg.Connection, project_id: uuid.UUID, found: Footprint) -> dict[str, Any]:
    """Every row about the person, nested where a row belongs to another (logs and media to their
    interaction, messages to their conversation)."""
    uid, sessions, interactions = found.user_id, found.session_ids, found.interaction_ids
    end_user = await conn.fetchrow("SELECT * FROM end_users WHERE project_id = $1 AND id = $2", project_id, uid)
    logs = await conn.fetch(
        """SELECT * FROM interaction_logs WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])
            ORDER BY created_at, id""", project_id, interactions)
    media = await conn.fetch(
        """SELECT * FROM media WHERE project_id = $1 AND interaction_id = ANY($2::uuid[])
            ORDER BY created_at, id""", project_id, interactions)
    out_interactions = _rows(await conn.fetch(
        f"""SELECT {INTERACTION_COLUMNS}, content_text FROM interactions
             WHERE project_id = $1 AND id = ANY($2::uuid[]) ORDER BY created_at, id""", project_id, interactions))
    by_id = {i["id"]: i for i in out_interactions}
    for i in out_interactions:
        i["logs"], i["media"] = [], []
    for log in logs:
        by_id[log["interaction_id"]]["logs"].append(dict(log))
    for m in media:
        by_id[m["interaction_id"]]["media"].append(dict(m))
    conversations = _rows(await conn.fetch(
        "SELECT * FROM conversations WHERE project_id = $1 AND id = ANY($2::uuid[]) ORDER BY created_at, id",
        project_id, found.conversation_ids))
    by_conversation = {c["id"]: c for c in conversations}
    for c in conversations:
        c["messages"] = []
    for message in await conn.fetch(
            """SELECT * FROM messages WHERE project_id = $1 AND conversation_id = ANY($2::uuid[])
                ORDER BY created_at, id""", project_id, found.conversation_ids):
        by_conversation[message["conversation_id"]]["messages"].append(dict(message))
    return {
        "format": FORMAT,
        "exported_at": datetime.now(UTC),
        "project_id": project_id,
        "end_user": dict(end_user) if end_user else None,
        "sessions": _rows(await conn.fetch(
            "SELECT * FROM sessions WHERE project_id = $1 AND id = ANY($2::uuid[]) ORDER BY started_at, id",
            project_id, sessions)),
        "interactions": out_interactions,
        "feedback_votes": _rows(await conn.fetch(
            """SELECT v.*, f.title AS feedback_item_title FROM feedback_votes v
                 JOIN feedback_items f ON f.project_id = v.project_id AND f.id = v.feedback_item_id
                WHERE v.project_id = $1 AND (v.user_id = $2 OR v.session_id = ANY($3::uuid[]))
                ORDER BY v.created_at, v.id""", project_id, uid, sessions)),
        "survey_responses": _rows(await conn.fetch(
            """SELECT r.*, s.name AS survey_name FROM survey_responses r
                 JOIN surveys s ON s.project_id = r.project_id AND s.id = r.survey_id
                WHERE r.project_id = $1 AND r.interaction_id = ANY($2::uuid[])
                ORDER BY r.created_at, r.id""", project_id, interactions)),
        "conversations": conversations,
        "replays": _rows(await conn.fetch(
            """SELECT id, project_id, session_id, interaction_id, started_at, ended_at, duration, event_count,
                      status, chunks FROM replays WHERE project_id = $1 AND id = ANY($2::uuid[])
                ORDER BY started_at NULLS LAST, id""", project_id, found.replay_ids)),
    }


def media_name(media: dict[str, Any]) -> str:
    """Where a media object goes inside the archive."""
    ext = mimetypes.guess_extension(media.get("content_type") or "") or ""
    return f"media/{media['interaction_id']}/{media['id']}{ext}"


@dataclass(frozen=True)
class Copied:
    """An object written into an archive: its size and SHA-256 as copied."""

    size: int
    sha256: str


async def copy_object(store: ObjectStore, key: str, archive: zipfile.ZipFile, name: str) -> Copied | None:
    """Stream one object into the archive as `name`; None when the object is gone (erased meanwhile)."""
    stream = store.stream(key)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = b""
    except Problem as exc:
        if exc.status != 404:
            raise
        return None
    size, digest = len(first), hashlib.sha256(first)
    with archive.open(zipfile.ZipInfo(name, date_time=datetime.now(UTC).timetuple()[:6]), "w",
                      force_zip64=True) as dst:
        await asyncio.to_thread(dst.write, first)
        async for chunk in stream:
            size += len(chunk)
            digest.update(chunk)
            await asyncio.to_thread(dst.write, chunk)
    return Copied(size, digest.hexdigest())


async def build(pool: asyncpg.Pool, store: ObjectStore, project_id: uuid.UUID, user_id: uuid.UUID) -> Archive | None:
    """The person's archive; None when there is no such end user."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        found = await footprint(conn, project_id, user_id)
        if found is None:
            return None
        doc = await person(conn, project_id, found)
    spool: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=IN_MEMORY)  # noqa: SIM115 - closed by Archive
    try:
        media_files = 0
        with zipfile.ZipFile(spool, "w", compression=zipfile.ZIP_STORED) as archive:
            for interaction in doc["interactions"]:
                for media in interaction["media"]:
                    media["file"] = None
                    if media.get("storage_key"):
                        name = media_name(media)
                        if await copy_object(store, media["storage_key"], archive, name) is not None:
                            media["file"] = name
                            media_files += 1
            replay_files = 0
            own = project_key(project_id) + "/"
            for replay in doc["replays"]:
                replay["files"] = []
                for key in await replay_keys(store, project_id, replay["id"], replay["chunks"]):
                    name = key.removeprefix(own)
                    if await copy_object(store, key, archive, name) is not None:
                        replay["files"].append(name)
                        replay_files += 1
            body = msgspec.json.format(msgspec.json.encode(doc), indent=2)
            archive.writestr("person.json", body, compress_type=zipfile.ZIP_DEFLATED)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    counts = {"sessions": len(found.session_ids), "interactions": len(found.interaction_ids),
              "conversations": len(found.conversation_ids), "replays": len(found.replay_ids),
              "media_files": media_files, "replay_files": replay_files, "bytes": size}
    return Archive(spool, size, counts)
