"""Text Postgres cannot store — the NUL character, `\\u0000` in JSON, `%00` in a query — is the caller's
422 problem on every endpoint of the router and the cells, never a 500, and writes nothing.

Postgres holds no NUL in text or jsonb; rather than each endpoint's types saying so, the services map the
database's refusal (common.problems.database_handler), so a field added later is covered too.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Admin, problem

NUL = "a\u0000b"


def test_nul_anywhere_is_422_and_stores_nothing(router: httpx.Client, admin: Admin) -> None:
    p = admin.project("eu-west")
    ingest = admin.key(p, ["ingest"])["h"]
    base = f"/v1/projects/{p['id']}"
    session = router.post("/v1/ingest/sessions", json={}, headers=ingest).json()["id"]
    bug: dict[str, Any] = {"type": "bug", "session_id": session, "content": {"text": "fine"}}
    calls: list[tuple[str, str, dict[str, Any] | None, dict[str, str]]] = [
        ("POST", "/v1/ingest/interactions", {**bug, "content": {"text": NUL}}, ingest),
        ("POST", "/v1/ingest/interactions", {**bug, "tags": [NUL]}, ingest),
        ("POST", "/v1/ingest/interactions", {**bug, "content": {"text": "x", NUL: 1}}, ingest),
        ("POST", "/v1/ingest/interactions", {**bug, "logs": {"console": [{"message": NUL}]}}, ingest),
        ("POST", "/v1/ingest/interactions", {**bug, "user": {"external_id": NUL}}, ingest),
        ("POST", "/v1/ingest/sessions", {"user": {"external_id": "u", "name": NUL}}, ingest),
        ("POST", "/v1/ingest/feedback-items", {"title": NUL, "session_id": session}, ingest),
        ("POST", "/v1/ingest/conversations", {"session_id": session, "body": NUL}, ingest),
        ("POST", f"{base}/feedback-items", {"title": NUL}, admin.h),
        ("POST", f"{base}/roadmap-items", {"title": NUL}, admin.h),
        ("GET", f"{base}/interactions?q=%00", None, admin.h),
        ("GET", f"{base}/end-users?q=a%00", None, admin.h),
        ("POST", "/v1/projects", {"name": NUL, "region": "eu-west"}, admin.h),
        ("POST", "/v1/auth/signup", {"email": "nul@example.com", "password": "long enough pass", "name": NUL}, {}),
    ]
    for method, path, body, headers in calls:
        r = router.request(method, path, json=body, headers=headers)
        assert r.status_code == 422, (method, path, body, r.status_code, r.text[:300])
        assert "NUL" in str(problem(r, 422).get("detail")), (method, path, r.text)
    # (A webhook URL with a NUL in it is refused before it gets that far: no such destination.)
    problem(router.post(f"{base}/webhooks", json={"url": "http://127.0.0.1:9/" + NUL, "events": ["vote.created"]},
                        headers=admin.h), 422)

    def count(path: str) -> int:
        return len(router.get(base + path, headers=admin.h).json()["data"])

    assert (count("/interactions"), count("/feedback-items"), count("/roadmap-items"), count("/webhooks"),
            count("/end-users"), count("/conversations")) == (0, 0, 0, 0, 0, 0)
    assert [q["name"] for q in router.get("/v1/projects", headers=admin.h).json()["data"] if "\u0000" in q["name"]] \
        == []
    login = router.post("/v1/auth/login", json={"email": "nul@example.com", "password": "long enough pass"})
    assert login.status_code == 401, login.text
    # The same requests without the NUL go through.
    assert router.post("/v1/ingest/interactions", json={**bug, "content": {"text": "a b"}},
                       headers=ingest).status_code == 201
