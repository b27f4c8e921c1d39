"""Fuzzing the whole public API through the router: zero 5xx.

Every operation of the router's OpenAPI document (`GET /openapi.json`, the router's own and the cells'
forwarded ones) is called with cases schemathesis generates from its schema, valid and invalid (wrong
types, missing and extra fields, out-of-range values), as the project's owner (ingest operations with an
ingest key) and against a real project so requests get past routing; then every operation is sent
malformed JSON, huge and deeply nested values, odd content types, odd headers and odd methods. A 5xx is
a bug (503 aside only where a dependency is really down, which nothing here arranges), so any is a failure.

The number of cases per operation is bounded so the whole pass stays under a minute on this machine.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from tests.conftest import Admin

EXAMPLES = 2
"""Generated cases per operation and mode (positive, negative)."""
BUDGET = 50.0
"""Seconds the generated pass may take before it stops starting new operations."""
DESTRUCTIVE = frozenset({
    ("POST", "/v1/auth/logout"), ("POST", "/v1/projects/{project_id}/move"), ("DELETE", "/v1/projects/{project_id}"),
    ("DELETE", "/v1/auth/me"), ("POST", "/v1/auth/password"), ("PATCH", "/v1/auth/me"),
    ("DELETE", "/v1/auth/sessions/{session_id}"),
})
"""Operations that, done right, would end the pass's own session or project: sent only without credentials."""
ODD_METHODS = ("PUT", "PATCH", "DELETE", "OPTIONS", "PROPFIND", "TRACE")


@pytest.fixture(scope="module")
def context(router: httpx.Client, admin: Admin) -> dict[str, Any]:
    project = admin.project("eu-west")
    key = admin.key(project, ["ingest"])
    doc = router.get("/openapi.json")
    assert doc.status_code == 200, doc.text
    return {"project": project, "ingest": key["h"], "owner": admin.h, "doc": doc.json(),
            "url": str(router.base_url).rstrip("/")}


def _auth(path: str, context: dict[str, Any]) -> dict[str, str]:
    return dict(context["ingest"] if path.startswith("/v1/ingest/") else context["owner"])


def _server_errors(failures: list[str], method: str, path: str, response: httpx.Response | Any,
                   sent: str) -> None:
    status = getattr(response, "status_code", None)
    if status is not None and status >= 500:
        failures.append(f"{status} {method} {path} ({sent}): {str(getattr(response, 'text', ''))[:300]}")


def test_generated_cases_get_no_5xx(context: dict[str, Any]) -> None:
    schema = schemathesis.openapi.from_dict(context["doc"])
    schema.config.update(base_url=context["url"])
    pid = context["project"]["id"]
    failures: list[str] = []
    called = 0
    statuses: dict[int, int] = {}
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if time.monotonic() - started > BUDGET:
            break
        if (operation.method.upper(), operation.path) in DESTRUCTIVE:
            continue
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                nonlocal called
                if "project_id" in (case.path_parameters or {}):
                    case.path_parameters["project_id"] = pid  # past routing, into the project's cell
                headers = {**(case.headers or {}), **_auth(case.operation.path, context)}
                try:
                    response = case.call(headers=headers, timeout=30)
                except Exception as exc:  # a generated value the client cannot even send (e.g. a NUL in a header)
                    if "Invalid" in type(exc).__name__ or "header" in str(exc).lower():
                        return
                    raise
                called += 1
                statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
                _server_errors(failures, case.method.upper(), case.operation.path, response, "generated case")

            try:
                run()
            except Unsatisfiable:
                continue
    print(f"generated pass: {called} requests in {time.monotonic() - started:.1f} s,"
          f" statuses {sorted(statuses.items())}")
    assert called > 100, called
    assert failures == [], "\n".join(failures[:20])


MALFORMED: list[tuple[str, bytes, str]] = [
    ("truncated JSON", b'{"type": "bug", "content": {"text": "x"', "application/json"),
    ("not JSON", b"\xff\xfe\x00garbage", "application/json"),
    ("a JSON scalar", b"42", "application/json"),
    ("a JSON array", b"[1, 2, 3]", "application/json"),
    ("nested 10k deep", b"[" * 10_000 + b"]" * 10_000, "application/json"),
    ("nested objects", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
    ("a 2 MiB string", b'{"type": "bug", "content": {"text": "' + b"x" * (2 * 1024 * 1024) + b'"}}',
     "application/json"),
    ("huge numbers", b'{"type": "bug", "limit": 1e999999, "index": 99999999999999999999999999}', "application/json"),
    ("wrong types", b'{"type": 7, "content": [], "tags": {"a": 1}, "user": "x", "name": null}', "application/json"),
    ("form-encoded", b"type=bug&content=x", "application/x-www-form-urlencoded"),
    ("no content type", b'{"type": "bug"}', ""),
]


def test_malformed_bodies_odd_headers_and_methods_get_no_5xx(context: dict[str, Any]) -> None:
    pid = context["project"]["id"]
    failures: list[str] = []
    paths = context["doc"]["paths"]
    with httpx.Client(base_url=context["url"], timeout=30, trust_env=False) as client:
        for template, item in paths.items():
            path = template.replace("{project_id}", pid)
            path = "/".join("0190a5b2-7c1d-7e3f-8a4b-5c6d7e8f9a0b" if part.startswith("{") else part
                            for part in path.split("/"))
            for method in item:
                auth = {} if (method.upper(), template) in DESTRUCTIVE else _auth(template, context)
                if method.upper() in ("POST", "PUT", "PATCH"):
                    for name, body, ctype in MALFORMED:
                        headers = {**auth, **({"content-type": ctype} if ctype else {})}
                        r = client.request(method.upper(), path, content=body, headers=headers)
                        _server_errors(failures, method.upper(), template, r, name)
            auth = {} if any((m.upper(), template) in DESTRUCTIVE for m in item) else _auth(template, context)
            for method in ODD_METHODS:
                r = client.request(method, path, headers=auth)
                _server_errors(failures, method, template, r, "odd method")
            odd = [
                {**auth, "content-type": "application/json; charset=utf-7"},
                {**auth, "x-request-id": "x" * 4000},
                {**auth, "accept": "application/xml", "accept-encoding": "br, zstd, gzip;q=0"},
                {**auth, "content-encoding": "gzip"},
                {"authorization": "Bearer " + "rk_eu_" + "\u00e9" * 40},
                {"authorization": "Basic Zm9vOmJhcg=="},
                {"authorization": "Bearer"},
                {**auth, "x-relay-signature": "forged", "x-relay-actor": "e30=", "x-relay-nonce": "0" * 32},
            ]
            for headers in odd:
                first = next(iter(item)).upper()
                try:
                    r = client.request(first, path, headers=headers, content=b"{}")
                except (httpx.LocalProtocolError, UnicodeEncodeError):
                    continue  # the client refuses to send it at all
                _server_errors(failures, first, template, r, f"odd headers {sorted(headers)}")
    assert failures == [], "\n".join(failures[:30])
