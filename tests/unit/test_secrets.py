"""Secrets at rest: sealed values open only with the same cell key, project and purpose, and untouched."""

from __future__ import annotations

import base64
import uuid

import pytest

from cell import secrets
from cell.integrations.types import LinearConfig, masked, seal, unseal
from cell.secrets import SecretError

KEY = "k" * 40
PROJECT = uuid.uuid4()


def test_roundtrip_and_stored_form() -> None:
    token = "lin_api_" + "x" * 40
    stored = secrets.seal(KEY, PROJECT, "integration:linear:api_key", token)
    assert stored.startswith("v1:") and token not in stored and secrets.is_sealed(stored)
    assert base64.b64decode(stored[3:])  # nonce ‖ ciphertext ‖ tag, base64
    assert secrets.unseal(KEY, PROJECT, "integration:linear:api_key", stored) == token
    # A fresh nonce every time: the same token never seals to the same text.
    assert secrets.seal(KEY, PROJECT, "integration:linear:api_key", token) != stored
    assert secrets.unseal(KEY, PROJECT, "p", secrets.seal(KEY, PROJECT, "p", "")) == ""
    assert secrets.unseal(KEY, PROJECT, "p", secrets.seal(KEY, PROJECT, "p", "pässwörd ✓")) == "pässwörd ✓"


def test_bound_to_key_project_and_purpose() -> None:
    stored = secrets.seal(KEY, PROJECT, "webhook:1:secret", "whsec_abc")
    with pytest.raises(SecretError):
        secrets.unseal(KEY, uuid.uuid4(), "webhook:1:secret", stored)  # moved to another project's row
    with pytest.raises(SecretError):
        secrets.unseal(KEY, PROJECT, "webhook:2:secret", stored)  # moved to another webhook
    with pytest.raises(SecretError):
        secrets.unseal(KEY, PROJECT, "integration:github:token", stored)  # moved to another field
    with pytest.raises(SecretError):
        secrets.unseal("other-cell-key-" + "z" * 30, PROJECT, "webhook:1:secret", stored)  # another region's key


def test_tampering_is_detected() -> None:
    stored = secrets.seal(KEY, PROJECT, "p", "a secret token value")
    blob = bytearray(base64.b64decode(stored[3:]))
    for i in (0, 12, len(blob) - 1):  # nonce, ciphertext, tag
        bad = bytearray(blob)
        bad[i] ^= 1
        with pytest.raises(SecretError):
            secrets.unseal(KEY, PROJECT, "p", "v1:" + base64.b64encode(bytes(bad)).decode())
    for garbage in ("v2:" + stored[3:], stored[3:], "v1:not base64!", "v1:" + base64.b64encode(b"short").decode(),
                    "v1:" + base64.b64encode(bytes(blob[:-1])).decode()):
        with pytest.raises(SecretError):
            secrets.unseal(KEY, PROJECT, "p", garbage)


def test_mask_shows_at_most_the_last_four() -> None:
    assert secrets.mask("ghp_1234567890abcd") == "••••abcd"
    assert secrets.mask("short") == "••••"  # too short to spare any of it


def test_integration_config_seals_only_its_secrets() -> None:
    config = LinearConfig(team_id="TEAM", api_key="lin_api_supersecretvalue1234")
    stored, changed = seal(KEY, PROJECT, "linear", config, None)
    assert changed == ["api_key"] and stored["team_id"] == "TEAM" and "webhook_secret" not in stored
    assert secrets.is_sealed(stored["api_key"]) and "supersecret" not in str(stored)
    assert masked(KEY, PROJECT, "linear", stored)["api_key"] == "••••1234"
    opened = unseal(KEY, PROJECT, "linear", stored)
    assert isinstance(opened, LinearConfig) and opened.api_key == "lin_api_supersecretvalue1234"
    # Sending the masked value (or nothing) back keeps the stored secret; a required one must exist.
    again, changed = seal(KEY, PROJECT, "linear", LinearConfig(team_id="T2", api_key="••••1234"), stored)
    assert changed == [] and again["api_key"] == stored["api_key"] and again["team_id"] == "T2"
    with pytest.raises(ValueError, match="api_key is required"):
        seal(KEY, PROJECT, "linear", LinearConfig(team_id="T2"), None)
    # Another project's stored config does not open here.
    with pytest.raises(SecretError):
        unseal(KEY, uuid.uuid4(), "linear", stored)


# -- the key ring --------------------------------------------------------------------------------------------

OLD, NEW = "o" * 32, "n" * 32


def test_a_plain_key_is_version_one_and_keeps_opening_what_it_sealed() -> None:
    pid = uuid.uuid4()
    sealed = secrets.seal(OLD, pid, "chat", "tok")
    assert sealed.startswith("v1:") and secrets.is_sealed(sealed)
    # The same key named as v1 in a ring, with a newer key in front: old values open, new ones use v2.
    ring = f"v2:{NEW},v1:{OLD}"
    assert secrets.unseal(ring, pid, "chat", sealed) == "tok"
    fresh = secrets.seal(ring, pid, "chat", "tok2")
    assert fresh.startswith("v2:") and secrets.unseal(ring, pid, "chat", fresh) == "tok2"
    with pytest.raises(secrets.SecretError):  # the new key alone cannot open a v1 value
        secrets.unseal(f"v2:{NEW}", pid, "chat", sealed)
    with pytest.raises(secrets.SecretError):  # nor the old one a v2 value
        secrets.unseal(OLD, pid, "chat", fresh)


def test_reseal_moves_a_value_to_the_newest_key_once() -> None:
    pid = uuid.uuid4()
    sealed = secrets.seal(OLD, pid, "p", "value")
    ring = f"v2:{NEW},v1:{OLD}"
    again = secrets.reseal(ring, pid, "p", sealed)
    assert again is not None and again.startswith("v2:")
    assert secrets.reseal(ring, pid, "p", again) is None
    assert secrets.unseal(f"v2:{NEW}", pid, "p", again) == "value"  # the old key can now leave the ring


@pytest.mark.parametrize("bad", [f"v2:{NEW},{OLD}", f"v1:{NEW},v1:{OLD}", f"v2:short,v1:{OLD}", "short"])
def test_bad_rings_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        secrets.ring(bad)
