"""The cell's object storage (media, replay chunks, exports), through obstore.

`file:///dir` (the default, a local directory), `s3://bucket/prefix` (production:
credentials and endpoint from the usual AWS_* variables) or `memory://`. Every
key lives under `projects/{project_id}/…`, so a residency audit can account for
each object by its project and erasure can remove a project's or a person's bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import obstore
from obstore.exceptions import NotFoundError
from obstore.store import LocalStore, MemoryStore, from_url

from common.problems import Problem


class TooLarge(Exception):
    """The stream went past its size limit; nothing was stored."""


@dataclass(frozen=True)
class Stored:
    """What was written."""

    key: str
    size: int
    sha256: str


def project_key(project_id: uuid.UUID, *parts: str) -> str:
    """`projects/{project_id}/part/part…`: the only shape of key this cell writes."""
    return "/".join(("projects", str(project_id), *parts))


class ObjectStore:
    """One cell's bucket or directory."""

    def __init__(self, url: str) -> None:
        self.url = url
        parsed = urlparse(url)
        if parsed.scheme == "file":
            root = Path(parsed.path)
            root.mkdir(parents=True, exist_ok=True)
            self._store: obstore.store.ObjectStore = LocalStore(prefix=root, mkdir=True)
        elif parsed.scheme == "memory":
            self._store = MemoryStore()
        elif parsed.scheme == "s3":
            self._store = from_url(url)
        else:
            raise ValueError(f"unsupported object store {url!r}")

    async def put_stream(self, key: str, chunks: AsyncIterable[bytes], max_bytes: int) -> Stored:
        """Store a stream, refusing (TooLarge, nothing kept) once it passes `max_bytes`."""
        digest = hashlib.sha256()
        size = 0

        async def counted() -> AsyncIterator[bytes]:
            nonlocal size
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise TooLarge
                digest.update(chunk)
                yield chunk

        try:
            await obstore.put_async(self._store, key, counted())
        except TooLarge:
            await self.delete(key)
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, TooLarge) or "TooLarge" in repr(exc):
                await self.delete(key)
                raise TooLarge from exc
            raise
        return Stored(key, size, digest.hexdigest())

    async def put(self, key: str, data: bytes) -> Stored:
        """Store bytes held in memory (small objects: exports, processed chunks)."""
        await obstore.put_async(self._store, key, data)
        return Stored(key, len(data), hashlib.sha256(data).hexdigest())

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes as a stream; 404 problem when absent."""
        try:
            result = await obstore.get_async(self._store, key)
        except (FileNotFoundError, NotFoundError) as exc:
            raise Problem(404, "no such object") from exc
        async for chunk in result.stream():
            yield bytes(chunk)

    async def get(self, key: str) -> bytes:
        """The whole object (for small objects only)."""
        try:
            result = await obstore.get_async(self._store, key)
        except (FileNotFoundError, NotFoundError) as exc:
            raise Problem(404, "no such object") from exc
        return bytes(await result.bytes_async())

    async def delete(self, key: str) -> None:
        """Remove one object; absent is fine."""
        with contextlib.suppress(FileNotFoundError, NotFoundError):
            await obstore.delete_async(self._store, key)

    async def keys(self, prefix: str) -> list[tuple[str, int]]:
        """Every (key, size) under a prefix."""
        found: list[tuple[str, int]] = []
        async for batch in obstore.list(self._store, prefix=prefix):
            found.extend((meta["path"], int(meta["size"])) for meta in batch)
        return found

    async def delete_prefix(self, prefix: str) -> int:
        """Remove every object under a prefix; return how many."""
        keys = [k for k, _ in await self.keys(prefix)]
        for key in keys:
            await self.delete(key)
        return len(keys)
