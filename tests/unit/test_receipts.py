"""Receipts: a chain of signed, hash-linked reports, and the first broken link when one is altered or dropped."""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from cell.residency import receipts
from cell.residency.receipts import GENESIS, Receipt, seal, signing_key, verify_chain

SECRET = "s" * 40
KEY = signing_key(SECRET, "eu-west")


def _chain(n: int, key: object = KEY) -> list[Receipt]:
    out: list[Receipt] = []
    prev = GENESIS
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for seq in range(1, n + 1):
        at = t0 + timedelta(minutes=seq)
        body = {"version": 1, "scope": "cell", "region": "eu-west", "created_at": at.isoformat(),
                "projects": {str(uuid.UUID(int=seq)): {"rows": seq, "clean": True}}, "clean": True}
        r = seal(key, seq, prev, body, scope="cell", audited_project=None, created_at=at)  # type: ignore[arg-type]
        out.append(r)
        prev = r.hash
    return out


def test_an_untouched_chain_verifies_and_names_its_head() -> None:
    chain = _chain(5)
    verdict = verify_chain(chain)
    assert verdict.ok and verdict.reports == 5 and verdict.first_seq == 1 and verdict.last_seq == 5
    assert verdict.head_hash == chain[-1].hash and verdict.public_key == receipts.public_key_of(KEY)
    assert verify_chain([]).ok


def test_links_hash_the_previous_report_and_sign_the_canonical_bytes() -> None:
    chain = _chain(3)
    assert chain[0].prev_hash == GENESIS
    assert [r.prev_hash for r in chain[1:]] == [r.hash for r in chain[:-1]]
    data = receipts.message(2, chain[1].prev_hash, chain[1].body)
    assert chain[1].hash == hashlib.sha256(data).hexdigest()
    Ed25519PublicKey.from_public_bytes(base64.b64decode(chain[1].public_key)).verify(
        base64.b64decode(chain[1].signature), data)
    # Key order does not matter: the canonical form sorts keys (as a jsonb round trip reorders them).
    reordered = dict(reversed(list(chain[1].body.items())))
    assert receipts.message(2, chain[1].prev_hash, reordered) == data


def test_the_key_is_derived_per_region_and_stable() -> None:
    assert receipts.public_key_of(signing_key(SECRET, "eu-west")) == receipts.public_key_of(KEY)
    assert receipts.public_key_of(signing_key(SECRET, "us-west")) != receipts.public_key_of(KEY)
    assert receipts.public_key_of(signing_key("t" * 40, "eu-west")) != receipts.public_key_of(KEY)


def test_an_altered_body_breaks_at_that_report() -> None:
    chain = _chain(5)
    chain[2].body["projects"][str(uuid.UUID(int=3))]["rows"] = 0
    verdict = verify_chain(chain)
    assert not verdict.ok and verdict.broken_at == 3 and verdict.line == 3
    assert "altered" in (verdict.reason or "")
    assert verdict.last_seq == 2 and verdict.head_hash == chain[1].hash


def test_a_rehashed_body_still_fails_its_signature() -> None:
    chain = _chain(4)
    forged = copy.deepcopy(chain[1])
    forged.body["clean"] = False
    forged.hash = hashlib.sha256(receipts.message(2, forged.prev_hash, forged.body)).hexdigest()
    chain[1] = forged
    verdict = verify_chain(chain)
    assert (verdict.ok, verdict.broken_at, verdict.reason) == (False, 2, "the signature does not verify")


def test_a_resealed_chain_under_another_key_is_refused() -> None:
    other = signing_key("x" * 40, "eu-west")
    forged = _chain(3, other)
    assert verify_chain(forged).ok  # consistent in itself …
    verdict = verify_chain(forged, receipts.public_key_of(KEY))  # … but not the cell's
    assert not verdict.ok and verdict.broken_at == 1 and "another key" in (verdict.reason or "")
    mixed = _chain(3)[:2] + forged[2:]
    verdict = verify_chain(mixed)
    assert not verdict.ok and verdict.broken_at == 3


@pytest.mark.parametrize(("drop", "broken_at", "missing"), [(0, 2, "report 1 missing"), (2, 4, "report 3 missing")])
def test_a_dropped_report_breaks_the_next_link(drop: int, broken_at: int, missing: str) -> None:
    chain = _chain(5)
    del chain[drop]
    verdict = verify_chain(chain)
    assert not verdict.ok and verdict.broken_at == broken_at and missing in (verdict.reason or "")


def test_several_dropped_reports_are_named_as_a_range() -> None:
    chain = _chain(6)
    del chain[1:4]
    verdict = verify_chain(chain)
    assert verdict.broken_at == 5 and "report 2-4 missing" in (verdict.reason or "")


def test_reordered_or_duplicated_reports_break() -> None:
    chain = _chain(4)
    chain[1], chain[2] = chain[2], chain[1]
    verdict = verify_chain(chain)
    assert not verdict.ok and verdict.broken_at == 3 and verdict.line == 2
    chain = _chain(3)
    verdict = verify_chain([*chain, chain[2]])
    assert not verdict.ok and verdict.line == 4 and "out of order" in (verdict.reason or "")


def test_a_renumbered_report_breaks_its_hash() -> None:
    chain = _chain(4)
    del chain[2]
    chain[2].seq = 3  # hide the gap: the seq is signed too
    verdict = verify_chain(chain)
    assert verdict.broken_at == 3 and "prev_hash" in (verdict.reason or "")


def test_a_project_report_must_name_its_project_in_the_signed_body() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    pid = uuid.uuid4()
    body = {"scope": "project", "project_id": str(pid), "created_at": at.isoformat(), "clean": True}
    r = seal(KEY, 1, GENESIS, body, scope="project", audited_project=pid, created_at=at)
    assert verify_chain([r]).ok
    r.audited_project = uuid.uuid4()
    assert verify_chain([r]).broken_at == 1


def test_export_lines_round_trip() -> None:
    chain = _chain(3)
    back = [receipts.from_line(receipts.to_line(r)) for r in chain]
    assert back == chain and verify_chain(back).ok
    with pytest.raises(ValueError):
        receipts.from_line('{"seq": "one"}')
