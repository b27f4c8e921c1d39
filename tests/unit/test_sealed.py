"""The registry of sealed fields: what a move opens in one cell, seals in the other, and compares opened."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from cell import sealed, secrets
from cell.integrations.types import CONFIG_TYPES, purpose
from common.problems import Problem

SOURCE = "s" * 40
TARGET = "t" * 40
PROJECT = uuid.uuid4()


def _webhook(key: str, secret: str | None = "whsec_abc") -> dict[str, Any]:
    hook = uuid.uuid4()
    return {"id": str(hook), "project_id": str(PROJECT), "url": "https://example.com/h",
            "secret": None if secret is None else secrets.seal(key, PROJECT, f"webhook:{hook}:secret", secret)}


def _github(key: str, token: str) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "project_id": str(PROJECT), "provider": "github", "enabled": True,
            "config": {"owner": "acme", "repo": "app", "api_url": "https://api.github.com", "ratio": 0.1,
                       "token": secrets.seal(key, PROJECT, purpose("github", "token"), token),
                       "webhook_secret": secrets.seal(key, PROJECT, purpose("github", "webhook_secret"), "hub")}}


def test_every_secret_field_of_every_provider_is_registered() -> None:
    registered = {(f.table, f.column, f.field) for f in sealed.FIELDS}
    for config in CONFIG_TYPES.values():
        assert {("integrations", "config", name) for name in config.SECRETS} <= registered
    assert {("projects", "sealed_secret", None), ("projects", "identity_secret", None),
            ("webhooks", "secret", None)} <= registered
    assert sealed.columns_of("projects") == ("sealed_secret", "identity_secret")
    assert sealed.fields_of("interactions") == ()


def test_a_value_carried_out_of_one_cell_opens_in_the_other() -> None:
    rows = [_webhook(SOURCE), _webhook(SOURCE, None)]
    carried = sealed.carry(SOURCE, PROJECT, "webhooks", [json.dumps(r) for r in rows])
    assert json.loads(carried[0])["secret"] == {"carried": "whsec_abc"} and json.loads(carried[1])["secret"] is None
    arrived = json.loads(sealed.seal_carried(TARGET, PROJECT, "webhooks", "[" + ",".join(carried) + "]"))
    stored = arrived[0]["secret"]
    assert secrets.is_sealed(stored) and "whsec_abc" not in stored
    assert secrets.unseal(TARGET, PROJECT, f"webhook:{rows[0]['id']}:secret", stored) == "whsec_abc"
    with pytest.raises(secrets.SecretError):  # the target's key, not the source's
        secrets.unseal(SOURCE, PROJECT, f"webhook:{rows[0]['id']}:secret", stored)
    assert arrived[1]["secret"] is None
    # The rest of the row is as it was, numbers exactly.
    github = _github(SOURCE, "ghp_token")
    [text] = sealed.carry(SOURCE, PROJECT, "integrations", [json.dumps(github)])
    [back] = json.loads(sealed.seal_carried(TARGET, PROJECT, "integrations", f"[{text}]"))
    plain = ("token", "webhook_secret")
    assert {k: v for k, v in back["config"].items() if k not in plain} == {
        k: v for k, v in github["config"].items() if k not in plain}
    assert secrets.unseal(TARGET, PROJECT, purpose("github", "token"), back["config"]["token"]) == "ghp_token"
    # `webhook_secret` is a field of three providers: the row's provider says whose purpose it opens with.
    assert secrets.unseal(TARGET, PROJECT, purpose("github", "webhook_secret"), back["config"]["webhook_secret"]) \
        == "hub"
    # Tables without sealed fields pass untouched, not even decoded.
    assert sealed.carry(SOURCE, PROJECT, "interactions", ["not json"]) == ["not json"]
    assert sealed.seal_carried(TARGET, PROJECT, "interactions", "not json") == "not json"


def test_a_value_that_does_not_open_in_the_source_stops_the_move_naming_the_field_not_the_value() -> None:
    row = _webhook("o" * 40, "whsec_other_cells")
    with pytest.raises(Problem) as refused:
        sealed.carry(SOURCE, PROJECT, "webhooks", [json.dumps(row)])
    assert refused.value.status == 422 and refused.value.title == "Sealed Value Cannot Move"
    detail = str(refused.value.detail)
    assert "webhooks.secret" in detail and str(row["id"]) in detail and "does not open" in detail
    assert "whsec_other_cells" not in detail and str(row["secret"]) not in detail
    with pytest.raises(Problem):  # the digest of checksums opens them too
        sealed.digest(SOURCE, PROJECT, "webhooks", [('["x"]', json.dumps(row))], "n")


def test_the_target_refuses_a_value_still_sealed_by_the_source() -> None:
    for value in (secrets.seal(SOURCE, PROJECT, "webhook:x:secret", "whsec_abc"), "whsec_plain", {"other": "x"}):
        row = {**_webhook(SOURCE), "secret": value}
        with pytest.raises(Problem) as refused:
            sealed.seal_carried(TARGET, PROJECT, "webhooks", json.dumps([row]))
        assert refused.value.title == "Sealed Value Cannot Move" and "arrived as the source stores it" in str(
            refused.value.detail)


def test_a_carried_value_where_the_row_holds_no_such_secret_is_never_stored() -> None:
    linear = {"id": str(uuid.uuid4()), "project_id": str(PROJECT), "provider": "linear",
              "config": {"team_id": "t", "token": {"carried": "plaintext"}}}
    with pytest.raises(Problem) as refused:
        sealed.seal_carried(TARGET, PROJECT, "integrations", json.dumps([linear]))
    assert "integrations.config.token" in str(refused.value.detail) and "plaintext" not in str(refused.value.detail)


def test_the_digest_compares_opened_values_and_catches_a_lost_or_altered_secret() -> None:
    github = _github(SOURCE, "ghp_token")
    key = json.dumps([github["id"]])
    [text] = sealed.carry(SOURCE, PROJECT, "integrations", [json.dumps(github)])
    moved = sealed.seal_carried(TARGET, PROJECT, "integrations", f"[{text}]")[1:-1]
    here = sealed.digest(SOURCE, PROJECT, "integrations", [(key, json.dumps(github))], "nonce")
    there = sealed.digest(TARGET, PROJECT, "integrations", [(key, moved)], "nonce")
    assert here is not None and here == there  # other ciphertexts, other keys, the same secrets
    assert sealed.digest(SOURCE, PROJECT, "integrations", [(key, json.dumps(github))], "other") != here
    arrived = json.loads(moved)
    altered = {**arrived, "config": {**arrived["config"],
                                     "token": secrets.seal(TARGET, PROJECT, purpose("github", "token"), "ghp_tokeN")}}
    assert sealed.digest(TARGET, PROJECT, "integrations", [(key, json.dumps(altered))], "nonce") != here
    lost = {**arrived, "config": {k: v for k, v in arrived["config"].items() if k != "token"}}
    assert sealed.digest(TARGET, PROJECT, "integrations", [(key, json.dumps(lost))], "nonce") != here
    assert sealed.digest(TARGET, PROJECT, "integrations", [(key, json.dumps(arrived))], "nonce") == here
    assert sealed.digest(SOURCE, PROJECT, "interactions", [], "nonce") is None


def test_checksums_hash_the_rest_of_the_row_without_the_sealed_values() -> None:
    assert sealed.without_sealed("interactions", "r") == "r"
    expr = sealed.without_sealed("integrations", "r")
    assert "#- '{config,token}'::text[]" in expr and expr.count("'{config,webhook_secret}'") == 1
    assert sealed.without_sealed("projects", "r") == "((r #- '{sealed_secret}'::text[]) #- '{identity_secret}'::text[])"
