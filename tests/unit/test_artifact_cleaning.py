"""The pure functions that clean artifacts before they are stored: rrweb events through the privacy rules
(cell/replays/scrubbing.py) and images without their metadata (cell/media/metadata.py)."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image, PngImagePlugin

from cell.media import metadata
from cell.privacy.scrub import DEFAULT_RULES, Report, Rules, compile_rules
from cell.replays.scrubbing import scrub_events

CARD = "4242 4242 4242 4242"


def _rules(*names: str) -> Rules:
    return compile_rules([{"id": name, "name": name, "enabled": True,
                           "rule": {"type": "pattern", "pattern": name, "scope": ["content"]}} for name in names])


def _field(node_id: int, **attributes: str) -> dict[str, Any]:
    return {"type": 2, "id": node_id, "tagName": "input", "attributes": attributes, "childNodes": []}


def test_secret_fields_are_redacted_by_node_id_across_event_kinds() -> None:
    snapshot = {"type": 2, "timestamp": 1, "data": {"node": {"type": 0, "id": 1, "childNodes": [
        _field(2, type="password", value="s3cret!"), _field(3, autocomplete="cc-csc", value="123"),
        _field(4, name="apiToken", value="abc"), _field(5, name="city", value="Paris")]}}}
    later = [
        {"type": 3, "timestamp": 2, "data": {"source": 0, "texts": [], "removes": [], "attributes": [
            {"id": 3, "attributes": {"value": "456"}}, {"id": 5, "attributes": {"value": "Lyon"}}],
            "adds": [{"parentId": 1, "node": _field(6, type="password", value="added")}]}},
        {"type": 3, "timestamp": 3, "data": {"source": 5, "id": 6, "text": "typed"}},
        {"type": 3, "timestamp": 4, "data": {"source": 5, "id": 5, "text": "Nice"}},
        {"type": 3, "timestamp": 5, "data": {"source": 5, "id": 2, "text": "***"}},
    ]
    report = Report()
    out = scrub_events(_rules(*DEFAULT_RULES), [snapshot, *later], report)
    fields = out[0]["data"]["node"]["childNodes"]
    assert [f["attributes"].get("value") for f in fields] == ["[redacted:credentials]"] * 3 + ["Paris"]
    assert out[1]["data"]["attributes"] == [{"id": 3, "attributes": {"value": "[redacted:credentials]"}},
                                            {"id": 5, "attributes": {"value": "Lyon"}}]
    assert out[1]["data"]["adds"][0]["node"]["attributes"]["value"] == "[redacted:credentials]"
    assert [e["data"]["text"] for e in out[2:]] == ["[redacted:credentials]", "Nice", "***"]
    assert report.counts == {"credentials": 6}


def test_patterns_reach_every_string_and_disabled_rules_keep_everything() -> None:
    events = [{"type": 6, "timestamp": 1, "data": {"plugin": "rrweb/console@1", "payload": {
        "level": "log", "payload": [f'"card {CARD}"']}}},
              {"type": 3, "timestamp": 2, "data": {"source": 5, "id": 9, "text": _field(1)["tagName"] + CARD}}]
    report = Report()
    out = scrub_events(_rules("card"), events, report)
    assert CARD not in str(out) and report.counts == {"card": 2}
    untouched = scrub_events(_rules(), events, Report())
    assert untouched == events
    # Without the credentials rule, a password field's value is the project's choice to keep.
    kept = scrub_events(_rules("card"), [{"type": 3, "timestamp": 1, "data": {"source": 0, "adds": [
        {"node": _field(2, type="password", value="pw")}]}}])
    assert kept[0]["data"]["adds"][0]["node"]["attributes"]["value"] == "pw"


def _png(**save: Any) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (6, 4), (1, 2, 3, 128)).save(out, "PNG", **save)
    return out.getvalue()


def test_an_image_without_metadata_is_kept_byte_for_byte() -> None:
    plain = _png()
    assert metadata.clean(plain, "image/png") == metadata.Cleaned(plain, ())
    # Bytes the decoder cannot read are kept as sent, unless they carry a metadata block.
    junk = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40
    assert metadata.clean(junk, "image/png").data == junk
    with pytest.raises(metadata.Unreadable):
        metadata.clean(junk + b"Exif\x00\x00MM", "image/png")
    # A PNG whose header reads but whose chunks are damaged (its IDAT length is off by one): kept as sent.
    damaged = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
               b"\x1f\x15\xc4\x89\x00\x00\x00\rIDATx\x9cc\xf8\xff\xff?\x00\x05\xfe\x02\xfe\xa7\x35\x81\x84"
               b"\x00\x00\x00\x00IEND\xaeB`\x82")
    assert metadata.clean(damaged, "image/png").data == damaged


def test_metadata_goes_and_rendering_stays() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the pixels are turned instead
    exif[0x8825] = {1: "S", 2: (33.0, 52.0, 4.0)}
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "someone")
    icc = b"\x00" * 8
    cleaned = metadata.clean(_png(exif=exif, pnginfo=text, icc_profile=icc), "image/png")
    assert set(cleaned.removed) == {"exif", "gps", "text"}
    image = Image.open(io.BytesIO(cleaned.data))
    assert image.size == (4, 6) and not image.getexif() and not getattr(image, "text", {})
    assert image.mode == "RGBA" and image.info.get("icc_profile") == icc
    huge = io.BytesIO()
    Image.new("1", (8000, 6000)).save(huge, "PNG", exif=exif)
    with pytest.raises(metadata.TooManyPixels):
        metadata.clean(huge.getvalue(), "image/png")
