"""One OpenAPI document at the router describes the whole public API, and agrees with the contract.

The contract's operations are parsed out of the contract itself (`../shared/API.md`, or the copy in
docs/contract.md): every `METHOD /v1/…` it names, its relative `…/x` forms, and the management
resources listed under `/v1/projects/{project_id}/`. Each must be in the document, with its method.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
PENDING: dict[tuple[str, str], str] = {
    # Operations of the contract a branch not merged yet adds (what for); the test holds every other one to the
    # document. Empty: every operation the contract names is served.
}


def contract_text() -> str:
    """The contract: `shared/API.md` beside the checkout (or above a worktree), else the repository's copy."""
    for folder in ROOT.parents:
        if (folder / "shared" / "API.md").exists():
            return (folder / "shared" / "API.md").read_text()
    return (ROOT / "docs" / "contract.md").read_text()


def normal(path: str) -> str:
    """A path with its parameters unnamed, no query, no trailing slash or ellipsis."""
    path = path.split("?", 1)[0].rstrip("…").rstrip("/")
    return re.sub(r"\{[^}]*\}", "{}", path)


def contract_operations(text: str) -> set[tuple[str | None, str]]:
    """(method or None, normalised path) for every operation the contract names."""
    found: set[tuple[str | None, str]] = set()
    recent: list[str] = []  # absolute paths seen so far (any service's), what `…/x` spans are relative to
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold no operations, and their fences pair
    section = text[text.index("## Management"):]
    section = section[:section.index("\n## ", 5)]
    listing = section[section.index("Under `/v1/projects/{project_id}/`"):]
    listing = listing[:listing.index("\n\n")]
    listing_spans = {" ".join(s.split()) for s in re.findall(r"`([^`]+)`", listing)}
    for span in (" ".join(s.split()) for s in re.findall(r"`([^`]+)`", text)):
        m = re.match(r"^((?:GET|POST|PUT|PATCH|DELETE)(?:\|(?:GET|POST|PUT|PATCH|DELETE))*)?\s*((?:/|…/)\S*)", span)
        if m is None or len(m.group(2)) < 2 or (m.group(2).startswith("…/") and span in listing_spans):
            continue  # not a path, or relative to a management resource (resolved below)
        methods: list[str | None] = list(m.group(1).split("|")) if m.group(1) else [None]
        raw = m.group(2)
        if raw.startswith("…/"):
            rel = normal(raw[1:]).strip("/").split("/")
            if not recent:
                continue
            if rel[0] == "{}":  # `DELETE …/{user_id}` after `…/members/{user_id}`
                base = recent[-1].removesuffix("/{}").split("/")
            else:
                holder = next((r for r in reversed(recent[-3:]) if rel[0] in r.split("/")), recent[-1])
                base = holder.split("/")
                base = base[:base.index(rel[0])] if rel[0] in base else base
            path = "/".join(base + rel)
        else:
            path = normal(raw)
            if raw.endswith(("…", "/")) and m.group(1) is None:  # a prefix (`/v1/ingest/…`), not an operation
                recent.append(path)
                continue
        recent.append(path)
        if path.startswith("/v1/"):
            found.update((method, path) for method in methods)
    # The management resources, relative to /v1/projects/{project_id}/.
    base = "/v1/projects/{}/"
    for name, aside in re.findall(r"`([a-z-]+(?:/\{[a-z_]+\}(?:/[a-z-]+)*)?)`(?:\s+\(([^)]*)\))?", listing):
        found.add((None, normal(base + name)))
        for item in re.findall(r"`([^`]+)`", aside or ""):
            m = re.match(r"^(GET|POST|PUT|PATCH|DELETE) …(/\S+)$", item)
            if m is not None:  # `GET …/{id}/export` under `end-users`
                found.add((m.group(1), normal(base + name + m.group(2))))
            elif aside.lstrip().startswith("+") and re.fullmatch(r"[a-z{}/_-]+", item):  # (+ `votes`, …)
                found.add((None, normal(base + (item if "/" in item else f"{name}/{{id}}/{item}"))))
    for span in re.findall(r"`([^`]+)`", section):
        m = re.match(r"^(GET|POST|PUT|PATCH|DELETE) ([a-z][a-z0-9/{}_-]*)", " ".join(span.split()))
        if m is not None:
            found.add((m.group(1), normal(base + m.group(2))))
    return found


def test_the_parser_reads_the_contract() -> None:
    ops = contract_operations(contract_text())
    assert ("POST", "/v1/ingest/interactions") in ops
    assert ("DELETE", "/v1/projects/{}/api-keys/{}") in ops  # `DELETE …/api-keys/{key_id}`
    assert ("GET", "/v1/ingest/conversations/{}/messages") in ops and \
        ("POST", "/v1/ingest/conversations/{}/messages") in ops
    assert (None, "/v1/projects/{}/feedback-items/{}/votes") in ops  # `feedback-items` (+ `votes`, …)
    assert (None, "/v1/projects/{}/replays/{}/events") in ops
    assert ("GET", "/v1/projects/{}/residency") in ops
    assert len(ops) > 40


@pytest.fixture(scope="module")
def document(router: httpx.Client) -> dict[str, Any]:
    r = router.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    doc: dict[str, Any] = r.json()
    return doc


def test_one_document_covers_router_ingest_and_management_paths(document: dict[str, Any]) -> None:
    paths = document["paths"]
    assert document["openapi"].startswith("3.")
    # The router's own, the cells' ingest and management, each with its request and response schemas.
    assert "post" in paths["/v1/auth/signup"] and "post" in paths["/v1/projects"]
    assert "post" in paths["/v1/ingest/interactions"]
    body = paths["/v1/ingest/interactions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    ref = body["$ref"].rsplit("/", 1)[-1]
    assert "type" in document["components"]["schemas"][ref]["properties"]
    assert "get" in paths["/v1/projects/{project_id}/interactions"]
    # Key writes are the router's, key listing the cell's: each operation once, where the router sends it.
    assert set(paths["/v1/projects/{project_id}/api-keys"]) == {"get", "post"}
    assert not [p for p in paths if p.startswith("/internal/")]  # cell-internal paths are not public


def test_the_document_agrees_with_the_contract(document: dict[str, Any]) -> None:
    served = {(method.upper(), normal(path)) for path, item in document["paths"].items() for method in item}
    served_paths = {path for _, path in served}
    missing = sorted(
        (method or "*", path) for method, path in contract_operations(contract_text())
        if (method is None and path not in served_paths) or (method is not None and (method, path) not in served))
    unexplained = [op for op in missing if op not in PENDING]
    assert unexplained == [], unexplained
