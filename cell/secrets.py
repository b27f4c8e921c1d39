"""Small secrets at rest (integration tokens, webhook signing secrets), sealed with the cell's key.

A database dump, a backup or a read replica must show no token. Each value is
sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the cell's
`RELAY_SECRET_KEY`, which never leaves the region. The stored form is
`v<N>:` + base64(nonce ‖ ciphertext ‖ tag), where N names the key it was sealed
with.

`RELAY_SECRET_KEY` is a key ring: either one key (version 1, as it always was)
or versioned keys, newest first, e.g. `v2:<new key>,v1:<old key>`. New values
are sealed with the newest; every version in the ring still opens; `relay
secrets rotate --region R` re-seals every stored value with the newest, after
which the old version can leave the ring. The associated data binds every ciphertext
to its project and its purpose (e.g. `integration:github:token`): a value
copied into another project's row, or into another field, fails to open
instead of leaking into the wrong place.
"""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
import uuid

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

VERSION = "v1"
"""The version of a single unversioned key (and of the associated-data format, for every key)."""
_NONCE = 12
_VERSIONED = re.compile(r"v([1-9][0-9]{0,5}):(.+)")
_SEALED = re.compile(r"v[1-9][0-9]{0,5}:[A-Za-z0-9+/]{40,}={0,2}\Z")
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


@functools.lru_cache(maxsize=8)
def ring(secret_key: str) -> tuple[tuple[str, str], ...]:
    """The key ring in RELAY_SECRET_KEY: (version, key) pairs, newest first; one plain key is version v1.

    Raises ValueError for a ring with a short key, a repeated version, or entries not all versioned.
    """
    entries = [e.strip() for e in secret_key.split(",")]
    if len(entries) == 1 and not _VERSIONED.fullmatch(entries[0]):
        pairs = [(VERSION, entries[0])]
    else:
        matched = [_VERSIONED.fullmatch(e) for e in entries]
        if not all(matched):
            raise ValueError("a key ring is `v<N>:<key>` entries separated by commas, newest first")
        pairs = [(f"v{m.group(1)}", m.group(2)) for m in matched if m]
    versions = [v for v, _ in pairs]
    if len(set(versions)) != len(versions):
        raise ValueError("a key ring names each version once")
    if any(len(k) < 32 for _, k in pairs):
        raise ValueError("every key is at least 32 characters")
    return tuple(pairs)


def newest(secret_key: str) -> str:
    """The version new values are sealed with."""
    return ring(secret_key)[0][0]


def _associated(project_id: uuid.UUID, purpose: str) -> bytes:
    return b"relay/" + VERSION.encode() + b"|" + project_id.bytes + b"|" + purpose.encode()


def seal(secret_key: str, project_id: uuid.UUID, purpose: str, plaintext: str) -> str:
    """The stored form of `plaintext` under the ring's newest key, openable only with this project and purpose."""
    raw = plaintext.encode()
    if len(raw) > MAX_PLAINTEXT:
        raise ValueError("secret too large")
    version, key = ring(secret_key)[0]
    nonce = os.urandom(_NONCE)
    sealed = _aead(key).encrypt(nonce, raw, _associated(project_id, purpose))
    return f"{version}:" + base64.b64encode(nonce + sealed).decode()


def unseal(secret_key: str, project_id: uuid.UUID, purpose: str, stored: str) -> str:
    """The plaintext of a value made by `seal` with a key of the ring, the same project and purpose."""
    version, sep, body = stored.partition(":")
    key = dict(ring(secret_key)).get(version) if sep else None
    if key is None:
        raise SecretError("not a sealed secret of a version in the key ring")
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SecretError("sealed secret is not valid base64") from exc
    if len(blob) < _NONCE + 16:
        raise SecretError("sealed secret is truncated")
    try:
        raw = _aead(key).decrypt(blob[:_NONCE], blob[_NONCE:], _associated(project_id, purpose))
    except InvalidTag as exc:
        raise SecretError("sealed secret does not open with this key, project and purpose") from exc
    return raw.decode()


def reseal(secret_key: str, project_id: uuid.UUID, purpose: str, stored: str) -> str | None:
    """`stored` sealed again with the newest key, or None when it already is (what a rotation runs)."""
    if stored.partition(":")[0] == newest(secret_key):
        return None
    return seal(secret_key, project_id, purpose, unseal(secret_key, project_id, purpose, stored))


def is_sealed(value: object) -> bool:
    """Whether a stored value looks like a sealed secret (to tell ciphertext from plain config)."""
    return isinstance(value, str) and _SEALED.match(value) is not None


def mask(plaintext: str) -> str:
    """What a dashboard may show of a secret: its last 4 characters when it is long enough to spare them."""
    return "••••" + plaintext[-4:] if len(plaintext) >= 12 else "••••"
