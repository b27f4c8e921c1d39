"""Wire types of media, as the contract names them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Literal

import msgspec

MediaKind = Literal["screenshot", "video", "attachment", "replay_blob"]


class Media(msgspec.Struct, kw_only=True):
    """One stored file's metadata (the upload answer is `{id, kind, content_type, size_bytes, …}`)."""

    id: uuid.UUID
    interaction_id: uuid.UUID | None
    kind: MediaKind
    content_type: str | None
    size_bytes: int | None
    sha256: str | None
    created_at: datetime
    metadata_removed: list[str] = msgspec.field(default_factory=list)
    """The kinds of embedded metadata removed from an image on the way in (`exif`, `gps`, `xmp`, `iptc` …)."""
