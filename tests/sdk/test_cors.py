"""CORS at the router (API.md "Browsers (CORS)"): any origin may preflight and read every ingest answer,
problems included; management paths only for the operator's dashboard origins; a project's
`allowed_origins` refuses other origins with a 403 the page can still read."""

from __future__ import annotations

import time

import httpx

from cell.auth import PLACEMENT_TTL
from tests.conftest import Admin, problem
from tests.sdk.conftest import DASHBOARD_ORIGIN

SHOP = "https://shop.example.com"


def _preflight(relay: httpx.Client, path: str, origin: str) -> httpx.Response:
    return relay.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                        "Access-Control-Request-Headers": "authorization,content-type"})


def test_ingest_preflight_and_answers_carry_cors(relay: httpx.Client, owner: Admin) -> None:
    for path in ("/v1/ingest/interactions", "/v1/ingest/replays/x/chunks/0", "/v1/ingest/flags"):
        r = _preflight(relay, path, SHOP)
        assert r.status_code == 204, r.text
        assert r.headers["access-control-allow-origin"] == SHOP
        assert {"GET", "POST", "DELETE"} <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
        allowed = {h.strip() for h in r.headers["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type", "content-encoding", "x-relay-conversation-token",
                "x-request-id"} <= allowed
        assert int(r.headers["access-control-max-age"]) > 0
        assert "access-control-allow-credentials" not in r.headers

    # A problem (no key) is readable by the page, with the headers its backoff needs exposed.
    r = relay.post("/v1/ingest/interactions", json={"type": "bug"}, headers={"Origin": SHOP})
    problem(r, 401)
    assert r.headers["access-control-allow-origin"] == SHOP
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert exposed == {"x-request-id", "x-relay-region", "retry-after"}

    project = owner.project("eu-west")
    key = owner.key(project, ["ingest"])
    r = relay.post("/v1/ingest/interactions", json={"type": "bug", "content": {"text": "cors"}},
                   headers={**key["h"], "Origin": SHOP})
    assert r.status_code == 201, r.text
    assert r.headers["access-control-allow-origin"] == SHOP and r.headers["x-relay-region"] == "eu-west"
    assert "x-relay-region" in r.headers["access-control-expose-headers"].lower()


def test_management_paths_only_for_dashboard_origins(relay: httpx.Client, owner: Admin) -> None:
    project = owner.project("us-west")
    path = f"/v1/projects/{project['id']}/interactions"
    problem(_preflight(relay, path, SHOP), 403)
    assert "access-control-allow-origin" not in _preflight(relay, path, SHOP).headers
    r = relay.get(path, headers={**owner.h, "Origin": SHOP})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers

    r = _preflight(relay, path, DASHBOARD_ORIGIN)
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == DASHBOARD_ORIGIN
    assert "PATCH" in r.headers["access-control-allow-methods"]
    r = relay.get(path, headers={**owner.h, "Origin": DASHBOARD_ORIGIN})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == DASHBOARD_ORIGIN
    # The router's own endpoints follow the same policy.
    assert _preflight(relay, "/v1/projects", DASHBOARD_ORIGIN).status_code == 204
    problem(_preflight(relay, "/v1/auth/login", SHOP), 403)


def test_allowed_origins_refuse_other_origins(relay: httpx.Client, owner: Admin) -> None:
    project = owner.project("us-west")
    key = owner.key(project, ["ingest"])
    url = f"/v1/projects/{project['id']}/settings"
    body = {"type": "feedback", "content": {"text": "from a page"}}

    r = relay.patch(url, json={"allowed_origins": ["https://App.example.com:443/", "http://localhost:3000"]},
                    headers=owner.h)
    assert r.status_code == 200, r.text
    assert r.json()["allowed_origins"] == ["https://app.example.com", "http://localhost:3000"]
    assert relay.get(url, headers=owner.h).json()["allowed_origins"] == r.json()["allowed_origins"]

    def send(origin: str | None) -> httpx.Response:
        return relay.post("/v1/ingest/interactions", json=body,
                          headers={**key["h"], **({"Origin": origin} if origin else {})})

    time.sleep(PLACEMENT_TTL)
    refused = send(SHOP)
    assert "allowed_origins" in problem(refused, 403)["detail"]
    assert refused.headers["access-control-allow-origin"] == SHOP  # the page can read the refusal
    assert refused.headers["x-relay-region"] == "us-west"  # refused by the project's cell
    assert send("https://app.example.com").status_code == 201
    assert send("http://localhost:3000").status_code == 201
    assert send(None).status_code == 201  # a server, not a browser
    listed = relay.get(f"/v1/projects/{project['id']}/interactions", headers=owner.h).json()["data"]
    assert len(listed) == 3

    for bad in (["app.example.com"], ["https://app.example.com/path"], ["ftp://x.example"], "https://a.example",
                ["https://user@app.example.com"]):
        err = problem(relay.patch(url, json={"allowed_origins": bad}, headers=owner.h), 422)
        assert err["detail"] or err.get("errors")
    assert relay.get(url, headers=owner.h).json()["allowed_origins"] == r.json()["allowed_origins"]
    problem(relay.patch(url, json={"allowed_origins": []}, headers=key["h"]), 403)

    # Back to every origin; retention is left as it was.
    r = relay.patch(url, json={"allowed_origins": []}, headers=owner.h)
    assert r.json()["allowed_origins"] == [] and r.json()["retention_days"] is None
    time.sleep(PLACEMENT_TTL)  # any other cell process trusts a project's origins for up to a second
    assert send(SHOP).status_code == 201
