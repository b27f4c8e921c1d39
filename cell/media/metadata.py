"""Images lose their embedded metadata (EXIF, XMP, IPTC, comments, text chunks) before they are stored.

A phone screenshot or photo can carry where it was taken (GPS), the device's
serial number, the owner's name, editing history. None of it is needed to see
the picture, so an image that holds any is decoded and written again with its
pixels only (Pillow, a maintained decoder: no parser of our own), keeping what
rendering needs: the colour profile, transparency, animation timing, the
orientation (applied to the pixels, since the tag that carried it goes). An
image without metadata is stored byte for byte as sent.

The result says what kinds of metadata were found (`exif`, `gps`, `xmp`,
`iptc`, …): the media row records it, never the values.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 40_000_000
"""Pixels of an image we decode (an 8K screenshot is 33 million); past it, 413 rather than a memory spike."""

FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/gif": "GIF", "image/webp": "WEBP"}
"""The content types whose metadata is removed, and the one decoder each may be read with."""

KEEP = ("icc_profile", "transparency", "duration", "loop", "background", "dpi")
"""`Image.info` entries that rendering needs; everything else there is metadata and is dropped."""

# Where formats keep metadata, by `Image.info` key (JPEG's APPn segments are looked at apart).
_INFO_KINDS = {"exif": "exif", "xmp": "xmp", "XML:com.adobe.xmp": "xmp", "photoshop": "iptc", "iptc": "iptc",
               "comment": "comment"}
_JPEG_RENDERING = (b"JFIF", b"JFXX", b"ICC_PROFILE", b"Adobe")
"""APPn segments that are about rendering, not about the picture's origin."""
_GPS_IFD, _SERIALS = 0x8825, (0xA431, 0xC62F)  # GPSInfo; BodySerialNumber, CameraSerialNumber
_ORIENTATION = 0x0112
# Byte patterns of metadata blocks, for a file the decoder cannot read at all.
_SIGNATURES = (b"Exif\x00\x00", b"http://ns.adobe.com/xap/", b"Photoshop 3.0\x00", b"eXIf", b"tEXt", b"zTXt",
               b"iTXt", b"XMP DataXMP")


class Unreadable(Exception):
    """The image holds metadata but cannot be decoded, so it cannot be written again without it."""


class TooManyPixels(Exception):
    """The image is larger than `MAX_PIXELS`."""


@dataclass(frozen=True)
class Cleaned:
    """The bytes to store and the kinds of metadata that were removed (empty: stored as sent)."""

    data: bytes
    removed: tuple[str, ...]


def _found(image: Image.Image) -> list[str]:
    """The kinds of metadata an opened (not yet decoded) image holds."""
    kinds = {kind for key, kind in _INFO_KINDS.items() if image.info.get(key)}
    text = getattr(image, "text", None)  # PNG tEXt/zTXt/iTXt chunks (XMP among them is counted above)
    if isinstance(text, dict) and any(k != "XML:com.adobe.xmp" for k in text):
        kinds.add("text")
    for marker, segment in getattr(image, "applist", []):  # JPEG: every APPn segment as read
        if marker.startswith("APP") and not segment.startswith(_JPEG_RENDERING):
            kinds.add("exif" if segment.startswith(b"Exif") else "xmp" if b"ns.adobe.com" in segment[:64]
                      else "iptc" if segment.startswith(b"Photoshop") else "application")
    exif = image.getexif()
    if exif:
        kinds.add("exif")
        if exif.get(_GPS_IFD) is not None:
            kinds.add("gps")
        if any(exif.get(tag) for tag in _SERIALS) or any(exif.get_ifd(0x8769).get(tag) for tag in _SERIALS):
            kinds.add("serial_number")
    return sorted(kinds)


def _rewrite(image: Image.Image, fmt: str) -> bytes:
    """The image encoded again with its pixels and rendering information only."""
    keep: dict[str | tuple[int, int], Any] = {k: image.info[k] for k in KEEP if k in image.info}
    animated = bool(getattr(image, "is_animated", False))
    turned = not animated and image.getexif().get(_ORIENTATION, 1) not in (1, None)
    upright = ImageOps.exif_transpose(image) if turned else image
    upright.info = {**keep}
    options: dict[str, Any] = {k: keep[k] for k in ("icc_profile", "dpi") if k in keep}
    if fmt == "JPEG":
        # The original quantization and subsampling, so the pixels do not lose quality a second time.
        options.update({"quality": 95} if turned else {"quality": "keep", "subsampling": "keep"})
    elif fmt == "WEBP":
        options.update(lossless=True)
    if fmt in ("GIF", "WEBP", "PNG") and animated:
        options.update(save_all=True, **{k: keep[k] for k in ("duration", "loop") if k in keep})
    out = io.BytesIO()
    upright.save(out, fmt, **options)
    return out.getvalue()


def clean(data: bytes, content_type: str) -> Cleaned:
    """The image without its metadata; CPU-bound, run it off the event loop.

    Raises TooManyPixels, or Unreadable for an image that holds metadata the decoder cannot get rid of.
    Bytes the decoder cannot read (not an image, or damaged) are stored as sent unless they carry a
    metadata block's signature: a damaged screenshot is still evidence of a bug.
    """
    fmt = FORMATS[content_type]
    try:
        image = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as exc:
        raise TooManyPixels from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return _as_sent(data, exc)
    with image:
        width, height = image.size
        if width * height > MAX_PIXELS:
            raise TooManyPixels
        try:
            found = _found(image)  # may decode the image (a PNG's eXIf can follow its pixels)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            return _as_sent(data, exc)
        if not found:
            return Cleaned(data, ())
        try:
            return Cleaned(_rewrite(image, fmt), tuple(found))
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise Unreadable("the image's pixels cannot be decoded, so its metadata cannot be removed") from exc


def _as_sent(data: bytes, exc: BaseException) -> Cleaned:
    """Damaged bytes the decoder cannot read: kept as sent, unless a metadata block shows in them."""
    if any(signature in data for signature in _SIGNATURES):
        raise Unreadable("the image cannot be read, and holds metadata that could not be removed") from exc
    return Cleaned(data, ())
