"""Which content types each kind of media may have, and whether the bytes really are that type.

The declared `Content-Type` is the uploader's claim; the first bytes (magic
numbers) are the evidence. Both must agree before anything is stored, so a
browser that is later served these bytes cannot be talked into treating an
HTML or script payload as an "image".
"""

from __future__ import annotations

import codecs
from collections.abc import Callable
from typing import Literal

UploadKind = Literal["screenshot", "video", "attachment"]

SNIFF_BYTES = 512
"""How much of the head is inspected: enough for every signature and a fair look at text."""

IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
VIDEOS = frozenset({"video/mp4", "video/webm"})
DOCUMENTS = frozenset({"application/pdf", "text/plain", "application/json", "application/zip"})

ALLOWED: dict[str, frozenset[str]] = {
    "screenshot": IMAGES,
    "video": VIDEOS,
    "attachment": IMAGES | VIDEOS | DOCUMENTS,
}

EXTENSIONS = {
    "image/png": ".png", "image/jpeg": ".jpg", "image/gif": ".gif", "image/webp": ".webp",
    "video/mp4": ".mp4", "video/webm": ".webm", "application/pdf": ".pdf", "text/plain": ".txt",
    "application/json": ".json", "application/zip": ".zip",
}

# Signatures of binary formats; text must not start with any of them.
_BINARY_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"RIFF", b"\x1a\x45\xdf\xa3", b"%PDF-", b"PK\x03\x04",
                 b"PK\x05\x06", b"PK\x07\x08", b"\x7fELF", b"MZ")
_TEXT_CONTROLS = frozenset(b"\t\n\r\f")
_JSON_STARTS = frozenset(b'{["-0123456789tfn')


def declared_type(header: str | None) -> str | None:
    """The media type of a Content-Type header without its parameters, lower-cased."""
    if not header:
        return None
    base = header.split(";", 1)[0].strip().lower()
    return base or None


def _png(head: bytes) -> bool:
    return head.startswith(b"\x89PNG\r\n\x1a\n")


def _jpeg(head: bytes) -> bool:
    return head.startswith(b"\xff\xd8\xff")


def _gif(head: bytes) -> bool:
    return head.startswith((b"GIF87a", b"GIF89a"))


def _webp(head: bytes) -> bool:
    return head.startswith(b"RIFF") and head[8:12] == b"WEBP"


def _mp4(head: bytes) -> bool:
    # ISO base media: a box size, then the `ftyp` box type.
    return head[4:8] == b"ftyp"


def _webm(head: bytes) -> bool:
    # An EBML header whose DocType is "webm" (Matroska shares the EBML magic).
    return head.startswith(b"\x1a\x45\xdf\xa3") and b"webm" in head[:64]


def _pdf(head: bytes) -> bool:
    return head.startswith(b"%PDF-")


def _zip(head: bytes) -> bool:
    return head.startswith((b"PK\x03\x04", b"PK\x05\x06"))


def _text(head: bytes) -> bool:
    """UTF-8 without NULs or control characters, and not a known binary format."""
    if head.startswith(_BINARY_MAGIC):
        return False
    try:
        # final=False: a multi-byte character cut at the end of the head is fine.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return False
    return all(b >= 0x20 or b in _TEXT_CONTROLS for b in head) and 0x7F not in head


def _json(head: bytes) -> bool:
    if not _text(head):
        return False
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")
    return bool(stripped) and stripped[0] in _JSON_STARTS


_CHECKS: dict[str, Callable[[bytes], bool]] = {
    "image/png": _png, "image/jpeg": _jpeg, "image/gif": _gif, "image/webp": _webp,
    "video/mp4": _mp4, "video/webm": _webm, "application/pdf": _pdf, "application/zip": _zip,
    "text/plain": _text, "application/json": _json,
}


def allowed(kind: str, content_type: str | None) -> bool:
    """Whether this kind of media may be of this declared type."""
    return content_type is not None and content_type in ALLOWED.get(kind, frozenset())


def matches(content_type: str, head: bytes) -> bool:
    """Whether the first bytes of a body look like `content_type` (an allowed type)."""
    check = _CHECKS.get(content_type)
    return check is not None and bool(head) and check(head[:SNIFF_BYTES])
