"""Residency receipts: audit reports signed by the cell and hash-chained, so none can be altered or dropped unseen.

Each report is sealed over the canonical JSON of `{seq, prev_hash, body}`
(sorted keys, no spaces, UTF-8): its `hash` is the SHA-256 of those bytes and
its `signature` an Ed25519 signature of the same bytes. `prev_hash` is the
previous report's hash (64 zeros for the first), so changing a body breaks its
hash, re-hashing it breaks its signature, and removing or reordering a report
breaks the next link. An auditor needs only the exported chain and the cell's
public key; `verify_chain` names the first broken link.

The signing key is not a new secret: it is derived from the cell's
`secret_key` with HKDF-SHA256 (salt and info bind it to this purpose and to the
region), so each region has its own key and rotating `secret_key` rotates it.
Cutting the chain's tail cannot be seen from the chain alone; the latest hash is
published with every `GET …/residency` for auditors to keep.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

GENESIS = "0" * 64
"""prev_hash of the first report."""
_SALT = b"relay/residency-receipts/v1"
_LOCK_ID = 0x52455349  # "RESI": one writer appends at a time, so seq and prev_hash never fork


class Receipt(msgspec.Struct, kw_only=True):
    """One sealed report, as stored in `residency_reports` and exported one per line."""

    seq: int
    created_at: datetime
    scope: str
    audited_project: uuid.UUID | None
    body: dict[str, Any]
    prev_hash: str
    hash: str
    signature: str
    public_key: str


class Verdict(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The outcome of checking a chain; on failure, the first broken link and why."""

    ok: bool
    reports: int
    public_key: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    head_hash: str | None = None
    broken_at: int | None = None
    """seq of the first report that fails."""
    line: int | None = None
    """Its position in the chain as read (1-based: the line of an export)."""
    reason: str | None = None


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that everybody hashes the same way."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def message(seq: int, prev_hash: str, body: dict[str, Any]) -> bytes:
    """The bytes a report's hash and signature cover."""
    return canonical({"body": body, "prev_hash": prev_hash, "seq": seq})


@functools.lru_cache(maxsize=16)
def signing_key(secret_key: str, region: str) -> Ed25519PrivateKey:
    """The region's receipt key, derived from the cell's secret key (no second secret to keep)."""
    seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT,
                info=b"ed25519 receipt key:" + region.encode()).derive(secret_key.encode())
    return Ed25519PrivateKey.from_private_bytes(seed)


def public_key_of(key: Ed25519PrivateKey) -> str:
    """The public half as auditors get it: 32 raw bytes, base64."""
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def seal(key: Ed25519PrivateKey, seq: int, prev_hash: str, body: dict[str, Any], *, scope: str,
         audited_project: uuid.UUID | None, created_at: datetime) -> Receipt:
    """A report chained after `prev_hash` and signed."""
    data = message(seq, prev_hash, body)
    return Receipt(seq=seq, created_at=created_at, scope=scope, audited_project=audited_project, body=body,
                   prev_hash=prev_hash, hash=hashlib.sha256(data).hexdigest(),
                   signature=base64.b64encode(key.sign(data)).decode(), public_key=public_key_of(key))


def _signature_ok(receipt: Receipt) -> bool:
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(receipt.public_key, validate=True))
        public.verify(base64.b64decode(receipt.signature, validate=True),
                      message(receipt.seq, receipt.prev_hash, receipt.body))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _link_problem(receipt: Receipt, previous: Receipt | None, key: str) -> str | None:
    """Why this report does not follow `previous` under `key`, or None."""
    expected = 1 if previous is None else previous.seq + 1
    if receipt.public_key != key:
        return "signed by another key than the chain's"
    if receipt.seq > expected:
        missing = str(expected) if receipt.seq == expected + 1 else f"{expected}-{receipt.seq - 1}"
        return f"report {missing} missing: the chain jumps from {expected - 1} to {receipt.seq}"
    if receipt.seq < expected:
        return f"out of order: report {receipt.seq} after report {expected - 1}"
    if receipt.prev_hash != (GENESIS if previous is None else previous.hash):
        return "prev_hash is not the hash of the report before it"
    if receipt.hash != hashlib.sha256(message(receipt.seq, receipt.prev_hash, receipt.body)).hexdigest():
        return "altered: the hash does not match the report's contents"
    if not _signature_ok(receipt):
        return "the signature does not verify"
    if receipt.scope == "project" and receipt.body.get("project_id") != str(receipt.audited_project):
        return "altered: audited_project is not the project in the signed body"
    return None


def verify_chain(receipts: list[Receipt], public_key: str | None = None) -> Verdict:
    """Check a whole chain, from report 1, in the order given; stop at the first broken link.

    Without `public_key` the chain must be signed throughout by the key of its first report (compare it with
    the key the cell publishes); with it, by that key.
    """
    if not receipts:
        return Verdict(ok=True, reports=0, public_key=public_key)
    key = public_key or receipts[0].public_key
    previous: Receipt | None = None
    for line, receipt in enumerate(receipts, start=1):
        problem = _link_problem(receipt, previous, key)
        if problem is not None:
            return Verdict(ok=False, reports=len(receipts), public_key=key, first_seq=receipts[0].seq,
                           last_seq=previous.seq if previous else None, head_hash=previous.hash if previous else None,
                           broken_at=receipt.seq, line=line, reason=problem)
        previous = receipt
    assert previous is not None
    return Verdict(ok=True, reports=len(receipts), public_key=key, first_seq=receipts[0].seq,
                   last_seq=previous.seq, head_hash=previous.hash)


def to_line(receipt: Receipt) -> str:
    """One exported report (a JSON line)."""
    return msgspec.json.encode(receipt).decode()


def from_line(line: str) -> Receipt:
    """A report read back from an export line (ValueError when it is not one)."""
    try:
        return msgspec.json.decode(line, type=Receipt)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ValueError(str(exc)) from exc


# -- Storage -----------------------------------------------------------------------------------------------------

COLUMNS = "seq, created_at, scope, audited_project, body, prev_hash, hash, signature, public_key"
"""The columns of `residency_reports` that make a Receipt (`from_row`)."""


def from_row(row: asyncpg.Record) -> Receipt:
    """A stored report as a Receipt."""
    return msgspec.convert(dict(row), Receipt)



async def append(conn: asyncpg.Connection, key: Ed25519PrivateKey, body: dict[str, Any], *, scope: str,
                 audited_project: uuid.UUID | None = None) -> Receipt:
    """Seal `body` as the next report and store it (inside the caller's transaction when there is one)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_ID)
        last = await conn.fetchrow("SELECT seq, hash FROM residency_reports ORDER BY seq DESC LIMIT 1")
        seq, prev = (1, GENESIS) if last is None else (last["seq"] + 1, last["hash"])
        created_at = datetime.fromisoformat(body["created_at"])
        receipt = seal(key, seq, prev, body, scope=scope, audited_project=audited_project, created_at=created_at)
        await conn.execute(
            f"INSERT INTO residency_reports ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            receipt.seq, receipt.created_at, receipt.scope, receipt.audited_project, receipt.body,
            receipt.prev_hash, receipt.hash, receipt.signature, receipt.public_key)
    return receipt


async def chain(conn: asyncpg.Connection | asyncpg.Pool) -> list[Receipt]:
    """Every stored report, in seq order."""
    return [from_row(r) for r in await conn.fetch(f"SELECT {COLUMNS} FROM residency_reports ORDER BY seq")]


async def latest_for(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID) -> Receipt | None:
    """The newest report that covered the project: its own audit, or an audit of the whole cell."""
    row = await conn.fetchrow(
        f"""SELECT {COLUMNS} FROM residency_reports
             WHERE audited_project = $1 OR (scope = 'cell' AND body->'projects' ? $2)
             ORDER BY seq DESC LIMIT 1""", project_id, str(project_id))
    return None if row is None else from_row(row)


async def recent_for(conn: asyncpg.Connection | asyncpg.Pool, project_id: uuid.UUID, limit: int) -> list[Receipt]:
    """The project's own newest reports (its audits), newest first."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM residency_reports WHERE audited_project = $1 ORDER BY seq DESC LIMIT $2",
        project_id, limit)
    return [from_row(r) for r in rows]


async def head(conn: asyncpg.Connection | asyncpg.Pool) -> Receipt | None:
    """The newest report of the chain."""
    row = await conn.fetchrow(f"SELECT {COLUMNS} FROM residency_reports ORDER BY seq DESC LIMIT 1")
    return None if row is None else from_row(row)
