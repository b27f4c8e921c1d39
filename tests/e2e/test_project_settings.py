"""A project's settings through the router: admins set `retention_days` (the daily retention job reads it;
tests/e2e/test_worker.py runs that job), everyone who can read the project sees it, a change is audited,
and bad input is a 422 that changes nothing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Admin, problem

UNCHANGED: dict[str, Any] = {"identity_verification": "optional", "strip_image_metadata": True,
                             "allowed_origins": []}
"""The other settings, at their defaults throughout."""


def test_settings_roles_validation_and_audit(router: httpx.Client, admin: Admin) -> None:
    a, b = admin.project("eu-west"), admin.project("us-west")
    url = f"/v1/projects/{a['id']}/settings"
    assert router.get(url, headers=admin.h).json() == {"retention_days": None, **UNCHANGED}

    r = router.patch(url, json={"retention_days": 90}, headers=admin.h)
    assert r.status_code == 200 and r.json() == {"retention_days": 90, **UNCHANGED}, r.text
    assert router.get(url, headers=admin.h).json() == {"retention_days": 90, **UNCHANGED}
    other = router.get(f"/v1/projects/{b['id']}/settings", headers=admin.h).json()
    assert other == {"retention_days": None, **UNCHANGED}

    # Viewers, agents and read or write keys read the settings and cannot change them; ingest keys neither.
    viewer, agent = admin.member(a, "viewer"), admin.member(a, "agent")
    read_key, write_key, ingest_key = admin.key(a, ["read"]), admin.key(a, ["write"]), admin.key(a, ["ingest"])
    for h in (viewer.h, agent.h, read_key["h"], write_key["h"]):
        assert router.get(url, headers=h).json() == {"retention_days": 90, **UNCHANGED}
        problem(router.patch(url, json={"retention_days": 1}, headers=h), 403)
    problem(router.get(url, headers=ingest_key["h"]), 403)
    # Another project's admin sees nothing of it.
    stranger = Admin(router)
    problem(router.get(url, headers=stranger.h), 404)
    problem(router.patch(url, json={"retention_days": 1}, headers=stranger.h), 404)

    bad: list[dict[str, Any]] = [{"retention_days": 0}, {"retention_days": 36501}, {"retention_days": "a month"},
                                 {"retention_days": 1.5}, {"retention": 30}, {},
                                 {"strip_image_metadata": "no"}, {"strip_image_metadata": None}]
    for body in bad:
        problem(router.patch(url, json=body, headers=admin.h), 422)
    assert router.get(url, headers=admin.h).json() == {"retention_days": 90, **UNCHANGED}

    # null keeps data forever again.
    forever = router.patch(url, json={"retention_days": None}, headers=admin.h).json()
    assert forever == {"retention_days": None, **UNCHANGED}
    entries = router.get(f"/v1/projects/{a['id']}/audit-logs", headers=admin.h).json()["data"]
    changes = [e["meta"] for e in entries if e["action"] == "project.settings_updated"]
    assert changes == [{"retention_days": None}, {"retention_days": 90}]
