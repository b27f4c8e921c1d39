"""Small secrets at rest (integration tokens, webhook signing secrets), sealed with the cell's key.

A database dump, a backup or a read replica must show no token. Each value is
sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the cell's
`RELAY_SECRET_KEY`, which never leaves the region. The stored form is
`v1:` + base64(nonce ‖ ciphertext ‖ tag), so a later key or algorithm can sit
next to this one during a rotation. The associated data binds every ciphertext
to its project and its purpose (e.g. `integration:github:token`): a value
copied into another project's row, or into another field, fails to open
instead of leaking into the wrong place.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
_NONCE = 12
_SALT = b"relay/cell/secrets-at-rest"
_INFO = b"relay secrets v1: aes-256-gcm"
MAX_PLAINTEXT = 16 * 1024  # tokens and passwords, not documents


class SecretError(Exception):
    """A stored secret cannot be opened: wrong key, wrong project or purpose, tampered or unknown format."""


@functools.lru_cache(maxsize=8)
def _aead(secret_key: str) -> AESGCM:
    """The AES-GCM cipher for this cell key, derived once per process."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(secret_key.encode())
    return AESGCM(key)


def _associated(project_id: uuid.UUID, purpose: str) -> bytes:
    return b"relay/" + VERSION.encode() + b"|" + project_id.bytes + b"|" + purpose.encode()


def seal(secret_key: str, project_id: uuid.UUID, purpose: str, plaintext: str) -> str:
    """The stored form of `plaintext`, openable only with this key, project and purpose."""
    raw = plaintext.encode()
    if len(raw) > MAX_PLAINTEXT:
        raise ValueError("secret too large")
    nonce = os.urandom(_NONCE)
    sealed = _aead(secret_key).encrypt(nonce, raw, _associated(project_id, purpose))
    return f"{VERSION}:" + base64.b64encode(nonce + sealed).decode()


def unseal(secret_key: str, project_id: uuid.UUID, purpose: str, stored: str) -> str:
    """The plaintext of a value made by `seal` with the same key, project and purpose."""
    version, sep, body = stored.partition(":")
    if not sep or version != VERSION:
        raise SecretError("not a sealed secret of a known version")
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("sealed secret is not valid base64") from exc
    if len(blob) < _NONCE + 16:
        raise SecretError("sealed secret is truncated")
    try:
        raw = _aead(secret_key).decrypt(blob[:_NONCE], blob[_NONCE:], _associated(project_id, purpose))
    except InvalidTag as exc:
        raise SecretError("sealed secret does not open with this key, project and purpose") from exc
    return raw.decode()


def is_sealed(value: object) -> bool:
    """Whether a stored value looks like a sealed secret (to tell ciphertext from plain config)."""
    return isinstance(value, str) and value.startswith(f"{VERSION}:")


def mask(plaintext: str) -> str:
    """What a dashboard may show of a secret: its last 4 characters when it is long enough to spare them."""
    return "••••" + plaintext[-4:] if len(plaintext) >= 12 else "••••"
