"""The signed manifest of a project export: what the archive holds, sealed by the cell's receipt key.

The manifest lists every file of the archive with its size and SHA-256 (each
table's rows, each object's bytes) and what was withheld. It is signed the way
residency receipts are (cell/residency/receipts.py): an Ed25519 signature by
the region's receipt key over the canonical JSON of the body (sorted keys, no
spaces, UTF-8), whose SHA-256 is the manifest's `hash`. The body names its
`format`, so a manifest can never pass for a receipt signed by the same key.
An auditor needs the archive and the public key the region publishes in
`GET …/residency`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cell.residency.receipts import canonical, public_key_of

FORMAT = "relay.project_export/1"


class SignedManifest(msgspec.Struct, kw_only=True):
    """`manifest.json`: the body, its hash, the signature over it and the key that made it."""

    format: str = FORMAT
    body: dict[str, Any]
    hash: str
    """SHA-256 (hex) of the canonical JSON of `body`."""
    signature: str
    """Ed25519 signature of the same bytes, base64."""
    public_key: str
    """The region's receipt key (raw, base64), as `GET …/residency` publishes it."""


def seal(key: Ed25519PrivateKey, body: dict[str, Any]) -> SignedManifest:
    """Sign a manifest body (JSON-able: strings, ints, lists and objects only)."""
    data = canonical({**body, "format": FORMAT})
    return SignedManifest(body={**body, "format": FORMAT}, hash=hashlib.sha256(data).hexdigest(),
                          signature=base64.b64encode(key.sign(data)).decode(), public_key=public_key_of(key))


def verify(manifest: SignedManifest, public_key: str | None = None) -> bool:
    """Whether the manifest is whole and signed by `public_key` (by default, the key it names)."""
    if manifest.body.get("format") != FORMAT or manifest.format != FORMAT:
        return False
    if public_key is not None and public_key != manifest.public_key:
        return False
    data = canonical(manifest.body)
    if hashlib.sha256(data).hexdigest() != manifest.hash:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(manifest.public_key, validate=True))
        key.verify(base64.b64decode(manifest.signature, validate=True), data)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True
