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
