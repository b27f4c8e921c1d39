"""Where a cell keeps values sealed with its own key: one registry, so a move carries them and an export
withholds them without anyone listing columns again.

A sealed value (cell/secrets.py) opens only with the key ring of the cell that sealed it, bound to its project
and purpose. Copied verbatim into another region's cell it opens nowhere: the integration would no longer
reach its tracker, the webhook would stop signing, identity verification would stop proving anybody. So a
move between regions (cell/moves) treats every field named here apart from the rest of the row:

- the source opens each value in the rows it exports (the full copy and the change log alike) and sends
  `{"carried": <plaintext>}` in its place over the signed hop (`carry`); a value that does not open there
  (a key missing from the ring, a tampered value) fails the move with problem `Sealed Value Cannot Move`,
  which the router does not retry: garbage is never copied;
- the target seals each carried value with its own key before the rows reach SQL (`seal_carried`); a value
  that arrives still sealed (a source that did not carry it) is refused the same way;
- both sides leave these fields out of the SQL row hash of their checksums and add `digest`, a keyed
  hash of the opened values, so a secret lost or altered on the way still fails verification.

The export archive (cell/exports/archive.py) withholds the same fields. Plaintexts never enter a log or an
error: refusals name the table, field and row id only.
"""

from __future__ import annotations

import decimal
import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from cell import secrets
from cell.integrations.types import CONFIG_TYPES
from cell.integrations.types import purpose as integration_purpose
from cell.projects.secret import PURPOSE as PROJECT_SECRET
from cell.users.identity import PURPOSE as IDENTITY_SECRET
from cell.webhooks.queries import purpose as webhook_purpose
from common.problems import SEALED_CANNOT_MOVE, Problem

CARRIED = "carried"
"""The key of the object a sealed value travels as, opened, between the two cells of a move."""
_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
_DIGEST_LABEL = b"relay/moves/sealed-digest/v1"
_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)  # numbers go back out exactly as they came
_encoder = msgspec.json.Encoder(decimal_format="number")


@dataclass(frozen=True)
class SealedField:
    """One place a sealed value is stored: a column, or a field of a JSON object column."""

    table: str
    column: str
    field: str | None
    """The key inside a jsonb column (`integrations.config`), None when the column holds the value."""
    purpose: Callable[[Mapping[str, Any]], str | None]
    """The value's associated-data purpose, from its row (as exported JSON); None when this row holds no such
    field (an integration of another provider)."""

    def __post_init__(self) -> None:
        if not all(_NAME.match(p) for p in self.path):  # they are spliced into SQL paths
            raise ValueError(f"not a plain name: {self.name}")

    @property
    def path(self) -> tuple[str, ...]:
        """Where the value sits in the row's JSON."""
        return (self.column,) if self.field is None else (self.column, self.field)

    @property
    def name(self) -> str:
        """`table.column[.field]`, what errors and manifests call it."""
        return ".".join((self.table, *self.path))

    def get(self, row: Mapping[str, Any]) -> Any:
        """The stored value in an exported row (None when absent or null)."""
        value = row.get(self.column)
        if self.field is not None:
            value = value.get(self.field) if isinstance(value, dict) else None
        return value

    def put(self, row: dict[str, Any], value: Any) -> None:
        """Replace the value in an exported row (it is there: `get` found it)."""
        if self.field is None:
            row[self.column] = value
        else:
            row[self.column][self.field] = value


def _integration(provider: str, name: str) -> SealedField:
    return SealedField("integrations", "config", name,
                       lambda row: integration_purpose(provider, name) if row.get("provider") == provider else None)


FIELDS: tuple[SealedField, ...] = (
    SealedField("projects", "sealed_secret", None, lambda row: PROJECT_SECRET),
    SealedField("projects", "identity_secret", None, lambda row: IDENTITY_SECRET),
    SealedField("webhooks", "secret", None, lambda row: webhook_purpose(uuid.UUID(str(row.get("id"))))),
    *(_integration(provider, name) for provider, config in CONFIG_TYPES.items() for name in config.SECRETS),
)
"""Every sealed value a cell stores. A new one belongs here, or a move breaks it and an export leaks it."""


def fields_of(table: str) -> tuple[SealedField, ...]:
    """The sealed fields of one table (none for most)."""
    return tuple(f for f in FIELDS if f.table == table)


def columns_of(table: str) -> tuple[str, ...]:
    """Columns of the table that hold a sealed value as a whole, in registry order."""
    return tuple(f.column for f in fields_of(table) if f.field is None)


def paths_of(table: str) -> tuple[tuple[str, ...], ...]:
    """Each distinct place a sealed value sits in the table's rows (JSON paths), in registry order."""
    return tuple(dict.fromkeys(f.path for f in fields_of(table)))


def without_sealed(table: str, row_jsonb: str) -> str:
    """SQL: the row's jsonb expression with every sealed value of the table removed (for hashing the rest)."""
    for path in paths_of(table):
        row_jsonb = f"({row_jsonb} #- '{{{','.join(path)}}}'::text[])"
    return row_jsonb


def refusal(detail: str) -> Problem:
    """The answer when a sealed value cannot travel: final for the move (the router does not retry it)."""
    return Problem(422, detail, title=SEALED_CANNOT_MOVE)


def _where(row: Mapping[str, Any]) -> str:
    return f"row {row.get('id')}" if "id" in row else "a row"


def _purpose(field: SealedField, row: Mapping[str, Any]) -> str | None:
    try:
        return field.purpose(row)
    except (ValueError, TypeError) as exc:  # e.g. a webhook row without a valid id
        raise refusal(f"{field.name} of {_where(row)}: cannot tell its purpose") from exc


def _in_row(table: str, row: Mapping[str, Any]) -> list[tuple[SealedField, str]]:
    """The sealed fields this row holds, with their purposes: one per place (several providers' configs share
    the name `webhook_secret`, the row's provider says whose it is)."""
    found: dict[tuple[str, ...], tuple[SealedField, str]] = {}
    for field in fields_of(table):
        purpose = _purpose(field, row)
        if purpose is not None and field.path not in found:
            found[field.path] = (field, purpose)
    return list(found.values())


def _open(secret_key: str, project_id: uuid.UUID, field: SealedField, row: Mapping[str, Any],
          purpose: str, value: Any) -> str:
    """The plaintext of a stored value; the move's refusal when it does not open with this cell's key ring."""
    if not isinstance(value, str):
        raise refusal(f"{field.name} of {_where(row)} is not a sealed value")
    try:
        return secrets.unseal(secret_key, project_id, purpose, value)
    except secrets.SecretError as exc:
        raise refusal(f"{field.name} of {_where(row)} does not open with this cell's key ring "
                      f"({exc}); the move cannot carry it: add the key that sealed it to RELAY_SECRET_KEY, or "
                      f"replace the secret, then move again") from None


def _rows(text: str | bytes) -> list[Any]:
    try:
        rows = _decoder.decode(text)
    except msgspec.DecodeError:
        raise Problem(422, "rows are not a JSON array") from None
    if not isinstance(rows, list):
        raise Problem(422, "rows are not a JSON array")
    return rows


def carry(secret_key: str, project_id: uuid.UUID, table: str, rows: list[str]) -> list[str]:
    """Source: exported rows (JSON object texts) with every sealed value opened into `{"carried": …}`.

    Rows of a table without sealed fields come back untouched, never decoded.
    """
    if not fields_of(table):
        return rows
    out = []
    for text in rows:
        row = _decoder.decode(text)
        for field, purpose in _in_row(table, row):
            value = field.get(row)
            if value is not None:
                field.put(row, {CARRIED: _open(secret_key, project_id, field, row, purpose, value)})
        out.append(_encoder.encode(row).decode())
    return out


def seal_carried(secret_key: str, project_id: uuid.UUID, table: str, rows: str) -> str:
    """Target: a batch (JSON array text) with every carried value sealed with this cell's key.

    A sealed field holding anything but a carried value or null is refused: a value sealed by the source's
    key would open nowhere here.
    """
    fields = fields_of(table)
    if not fields:
        return rows
    batch = _rows(rows)
    for row in batch:
        if not isinstance(row, dict):
            raise Problem(422, f"{table}: rows are JSON objects")
        held = _in_row(table, row)
        for field, purpose in held:
            value = field.get(row)
            if value is None:
                continue
            if not _carried(value):
                raise refusal(f"{field.name} of {_where(row)} arrived as the source stores it, sealed with "
                              f"the source's key: the source must carry it opened")
            try:
                field.put(row, secrets.seal(secret_key, project_id, purpose, value[CARRIED]))
            except ValueError:
                raise refusal(f"{field.name} of {_where(row)} is too large to seal") from None
        for field in fields:  # never store a plaintext where this row holds no such secret
            if field.path not in {f.path for f, _ in held} and _carried(field.get(row)):
                raise refusal(f"{field.name} of {_where(row)}: carried where this row holds no such secret")
    return _encoder.encode(batch).decode()


def _carried(value: Any) -> bool:
    return isinstance(value, dict) and value.keys() == {CARRIED} and isinstance(value[CARRIED], str)


def digest(secret_key: str, project_id: uuid.UUID, table: str, rows: Iterable[tuple[str, str]],
           nonce: str) -> str | None:
    """Both sides of a move: a keyed hash of every sealed value of the table's rows, opened; None for a table
    without sealed fields.

    `rows` are (primary key as JSON text, row as JSON text). Each (key, field, plaintext or null) enters an
    HMAC keyed by the project and the caller's `nonce`, in sorted order, so both cells agree exactly when
    every row holds the same secrets, whatever their ciphertexts. The key keeps the figure useless for
    guessing a weak secret (an SMTP password) offline from one checksum answer.
    """
    if not fields_of(table):
        return None
    entries: list[tuple[str, str, str | None]] = []
    for key, text in rows:
        row = _decoder.decode(text)
        for field, purpose in _in_row(table, row):
            value = field.get(row)
            opened = None if value is None else _open(secret_key, project_id, field, row, purpose, value)
            entries.append((key, field.name, opened))
    entries.sort(key=lambda e: (e[0], e[1]))
    mac_key = hmac.new(_DIGEST_LABEL, project_id.bytes + nonce.encode(), hashlib.sha256).digest()
    return hmac.new(mac_key, msgspec.json.encode(entries), hashlib.sha256).hexdigest()
