"""Issues filed in Linear, Jira and GitHub from interactions, and their state synced back, end to end.

Everything goes through the router to a cell and its real worker; the
trackers are local fakes (tests/fakes) that speak each provider's documented
wire format, so the tests read exactly what Relay sent them.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from saq import Queue

from tests.conftest import Admin, problem, sql, until
from tests.fakes import github as gh
from tests.fakes import jira as jr
from tests.fakes import linear as ln
from tests.fakes.server import DROP, FakeServer, Recorded

DEADLINE = 30.0
CREATE_JOB = "integrations.create_issue"


@pytest.fixture(scope="module")
def github() -> Iterator[gh.FakeGitHub]:
    fake = gh.FakeGitHub()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def linear() -> Iterator[ln.FakeLinear]:
    fake = ln.FakeLinear()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def jira() -> Iterator[jr.FakeJira]:
    fake = jr.FakeJira()
    yield fake
    fake.close()


def wait_for(what: str, probe: Callable[[], Any]) -> Any:
    """Poll `probe` until it returns something truthy, failing after DEADLINE seconds."""
    return until(probe, DEADLINE, what, every=0.1)


class Tracked:
    """One project with the credentials a test needs, wired to the fake trackers."""

    def __init__(self, router: httpx.Client, topo: dict[str, Any], region: str = "eu-west") -> None:
        self.router = router
        self.topo = topo
        self.region = region
        self.admin = Admin(router)
        self.project = self.admin.project(region)
        self.id = self.project["id"]
        self.base = f"/v1/projects/{self.id}"
        self.ingest = self.admin.key(self.project, ["ingest"])
        self.write = self.admin.key(self.project, ["write"])
        self.dsn = str(topo["cells"][region]["database_url"])
        self.secrets: dict[str, str] = {}

    def interaction(self, **body: Any) -> str:
        body = {"type": "bug", "content": {"text": f"something broke {secrets.token_hex(4)}"}, **body}
        r = self.router.post("/v1/ingest/interactions", headers=self.ingest["h"], json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def configure(self, provider: str, config: dict[str, Any]) -> None:
        r = self.router.put(f"{self.base}/integrations/{provider}", headers=self.admin.h, json={"config": config})
        assert r.status_code == 201, r.text
        self.secrets[provider] = config["webhook_secret"]

    def github(self, fake: gh.FakeGitHub, *, allowed: bool = True) -> dict[str, Any]:
        token = "ghp_" + secrets.token_hex(18)
        if allowed:
            fake.allow(token)
        config = {"owner": "acme", "repo": f"app-{secrets.token_hex(4)}", "token": token,
                  "webhook_secret": secrets.token_hex(16), "api_url": fake.url}
        self.configure("github", config)
        return config

    def linear(self, fake: ln.FakeLinear) -> dict[str, Any]:
        key = "lin_api_" + secrets.token_hex(20)
        fake.allow(key)
        config = {"team_id": f"team-{secrets.token_hex(4)}", "api_key": key,
                  "webhook_secret": "lin_wh_" + secrets.token_hex(16), "api_url": f"{fake.url}/graphql"}
        self.configure("linear", config)
        return config

    def jira(self, fake: jr.FakeJira) -> dict[str, Any]:
        config = {"base_url": fake.url, "email": f"bot-{secrets.token_hex(3)}@example.com",
                  "project_key": "W" + secrets.token_hex(3).upper(), "api_token": "ATATT" + secrets.token_hex(20),
                  "webhook_secret": secrets.token_hex(16)}
        fake.allow(config["email"], config["api_token"])
        self.configure("jira", config)
        return config

    def request(self, iid: str, provider: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.router.post(f"{self.base}/interactions/{iid}/links", headers=headers or self.write["h"],
                                json={"provider": provider})

    def get(self, iid: str) -> dict[str, Any]:
        r = self.router.get(f"{self.base}/interactions/{iid}", headers=self.admin.h)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def linked(self, iid: str, provider: str) -> dict[str, Any]:
        """File the interaction with `provider` and wait until the worker linked it."""
        r = self.request(iid, provider)
        assert r.status_code == 202, r.text
        assert r.json()["status"] == "pending" and r.json()["provider"] == provider
        wait_for(f"the {provider} issue", lambda: provider in self.issue_providers(iid))
        return self.get(iid)

    def issue_providers(self, iid: str) -> list[str]:
        r = self.router.get(f"{self.base}/interactions/{iid}/links", headers=self.admin.h)
        assert r.status_code == 200, r.text
        return [d["provider"] for d in r.json()["data"] if d["kind"] == "issue"]

    def hook(self, provider: str, headers: dict[str, str], body: bytes,
             project_id: str | None = None) -> httpx.Response:
        return self.router.post(f"/v1/hooks/{project_id or self.id}/{provider}", headers=headers, content=body)

    def outbox(self, kind: str) -> list[dict[str, Any]]:
        rows = sql(self.dsn, "SELECT payload FROM outbox WHERE project_id = $1 AND kind = $2 ORDER BY id",
                   uuid.UUID(self.id), kind)
        return [dict(json.loads(r["payload"])) for r in rows]

    def audit(self, iid: str) -> list[dict[str, Any]]:
        r = self.router.get(f"{self.base}/audit-logs", params={"target_id": iid}, headers=self.admin.h)
        assert r.status_code == 200, r.text
        return list(reversed(r.json()["data"]))

    def journal(self, iid: str, provider: str) -> dict[str, Any] | None:
        rows = sql(self.dsn, """SELECT * FROM integration_issue_requests
                                 WHERE project_id = $1 AND interaction_id = $2 AND provider = $3""",
                   uuid.UUID(self.id), uuid.UUID(iid), provider)
        return dict(rows[0]) if rows else None

    def jobs_done(self) -> None:
        """Wait until every create_issue job of this project was relayed and has finished (complete or failed)."""
        redis_url = self.topo["cells"][self.region]["redis_url"]

        async def statuses(ids: list[int]) -> list[str]:
            queue = Queue.from_url(redis_url, name=f"relay-{self.region}")
            try:
                jobs = [await queue.job(f"outbox:{i}:{CREATE_JOB}") for i in ids]
                return [j.status.value if j is not None else "missing" for j in jobs]
            finally:
                await queue.disconnect()

        def finished() -> bool:
            rows = sql(self.dsn, "SELECT id, dispatched_at FROM outbox WHERE project_id = $1 AND kind = $2",
                       uuid.UUID(self.id), "integration.create_issue")
            if any(r["dispatched_at"] is None for r in rows):
                return False
            return all(s in ("complete", "failed") for s in asyncio.run(statuses([r["id"] for r in rows])))

        wait_for("the create_issue jobs to finish", finished)


# Filing issues ------------------------------------------------------------------------------------------------


def test_github_issue_filed_with_the_documented_request_and_linked(router: httpx.Client, topo: dict[str, Any],
                                                                   github: gh.FakeGitHub) -> None:
    t = Tracked(router, topo)
    config = t.github(github)
    iid = t.interaction(content={"title": "Checkout button does nothing",
                                 "text": "I click Pay and nothing happens.\n\nTried twice, cc @octocat ```"},
                        severity="high", tags=["checkout", "payments"])
    got = t.linked(iid, "github")

    issues = github.repo_issues("acme", config["repo"])
    assert len(issues) == 1
    issue = issues[0]
    assert got["linked_issue_provider"] == "github"
    assert got["linked_issue_id"] == str(issue["id"]) and got["linked_issue_url"] == issue["html_url"]
    [call] = github.calls("POST", f"/repos/acme/{config['repo']}/issues")
    assert call.headers["authorization"] == f"Bearer {config['token']}"
    assert call.headers["accept"] == "application/vnd.github+json"
    assert call.headers["x-github-api-version"] == "2022-11-28" and call.headers["user-agent"]
    assert call.headers["host"] == github.url.removeprefix("http://")  # pinned address, configured name
    body = call.json
    assert set(body) == {"title", "body"} and body["title"] == "Checkout button does nothing"
    # The user's words are fenced (no @-mentions or markup reach the tracker), then the facts and the marker.
    assert "````text\nI click Pay and nothing happens.\n\nTried twice, cc @octocat ```\n````" in body["body"]
    assert "**Severity:** high" in body["body"] and "**Tags:** checkout, payments" in body["body"]
    assert "**Type:** bug" in body["body"] and body["body"].endswith(f"Relay interaction {iid}")

    links = router.get(f"{t.base}/interactions/{iid}/links", headers=t.admin.h)
    assert links.status_code == 200, links.text
    assert [(d["kind"], d["provider"], d["external_id"], d["external_url"]) for d in links.json()["data"]] == [
        ("issue", "github", str(issue["id"]), issue["html_url"])]
    rows = sql(t.dsn, "SELECT external_state, internal_type FROM integration_links WHERE project_id = $1",
               uuid.UUID(t.id))
    assert [(r["external_state"], r["internal_type"]) for r in rows] == [("open", "interaction")]
    integration = router.get(f"{t.base}/integrations/github", headers=t.admin.h).json()
    assert integration["last_sync_at"] is not None
    audit = [(a["action"], a["actor_type"], a["actor_id"]) for a in t.audit(iid)]
    assert audit == [("interaction.issue_requested", "api", t.write["key"][:12]),
                     ("interaction.issue_linked", "system", "integration:github")]
    assert {"interaction_id": iid, "fields": ["linked_issue_id", "linked_issue_provider", "linked_issue_url"]} \
        in t.outbox("interaction.updated")
    journal = t.journal(iid, "github")
    assert journal is not None and journal["completed_at"] is not None and journal["last_error"] is None

    # Asking again answers with the link and files nothing.
    again = t.request(iid, "github")
    assert again.status_code == 200, again.text
    assert again.json() | {"requested_at": None} == {
        "interaction_id": iid, "provider": "github", "status": "linked", "external_id": str(issue["id"]),
        "external_url": issue["html_url"], "requested_at": None}
    t.jobs_done()
    assert len(github.calls("POST", f"/repos/acme/{config['repo']}/issues")) == 1


def test_linear_issue_filed_with_issue_create_and_its_own_id(router: httpx.Client, topo: dict[str, Any],
                                                             linear: ln.FakeLinear) -> None:
    t = Tracked(router, topo, "us-west")
    config = t.linear(linear)
    iid = t.interaction(type="feedback", content={"text": "Search ignores accents\nTyping é finds nothing."},
                        tags=["search"])
    got = t.linked(iid, "linear")

    [issue] = linear.team_issues(config["team_id"])
    assert (got["linked_issue_provider"], got["linked_issue_id"], got["linked_issue_url"]) == (
        "linear", issue["id"], issue["url"])
    [call] = [c for c in linear.calls("POST", "/graphql") if "issueCreate" in c.json["query"]]
    assert call.headers["authorization"] == config["api_key"]  # personal API keys go without "Bearer"
    assert call.headers["content-type"] == "application/json"
    assert re.search(r"mutation \w+\(\$input: IssueCreateInput!\) \{\s*issueCreate\(input: \$input\)",
                     call.json["query"])
    given = call.json["variables"]["input"]
    assert set(given) == {"id", "teamId", "title", "description"}
    assert given["teamId"] == config["team_id"] and given["title"] == "Search ignores accents"  # the first line
    assert uuid.UUID(given["id"]).version == 4 and given["id"] == issue["id"]
    assert "```text\nSearch ignores accents\nTyping é finds nothing.\n```" in given["description"]
    assert "**Type:** feedback" in given["description"] and "**Tags:** search" in given["description"]


def test_jira_issue_filed_with_basic_auth_and_an_adf_description(router: httpx.Client, topo: dict[str, Any],
                                                                 jira: jr.FakeJira) -> None:
    t = Tracked(router, topo)
    config = t.jira(jira)
    iid = t.interaction(content={"title": "PDF export is blank", "description": "Every page is white.",
                                 "steps": ["open report", "export"]}, severity="critical")
    got = t.linked(iid, "jira")

    [issue] = jira.project_issues(config["project_key"])
    assert (got["linked_issue_provider"], got["linked_issue_id"], got["linked_issue_url"]) == (
        "jira", issue["id"], f"{jira.url}/browse/{issue['key']}")
    [call] = jira.calls("POST", "/rest/api/3/issue")[-1:]
    basic = base64.b64encode(f"{config['email']}:{config['api_token']}".encode()).decode()
    assert call.headers["authorization"] == f"Basic {basic}"
    fields = call.json["fields"]
    assert set(fields) == {"project", "issuetype", "summary", "description"}
    assert fields["project"] == {"key": config["project_key"]} and fields["issuetype"] == {"name": "Bug"}
    assert fields["summary"] == "PDF export is blank"
    doc = fields["description"]
    assert doc["type"] == "doc" and doc["version"] == 1
    texts = [n["text"] for p in doc["content"] for n in p["content"] if n["type"] == "text"]
    assert texts[:3] == ["PDF export is blank", "Every page is white.", "open report export"]
    assert "Severity: " in texts and "critical" in texts and texts[-1] == f"Relay interaction {iid}"


@pytest.mark.parametrize("provider", ["github", "linear", "jira"])
def test_an_answer_lost_after_the_issue_was_filed_is_found_not_filed_again(
        provider: str, router: httpx.Client, topo: dict[str, Any], github: gh.FakeGitHub, linear: ln.FakeLinear,
        jira: jr.FakeJira) -> None:
    t = Tracked(router, topo)
    fake: FakeServer
    filed: list[dict[str, Any]]
    creates: list[Recorded]
    lookups: list[Recorded]
    if provider == "github":
        fake, config = github, t.github(github)
    elif provider == "linear":
        fake, config = linear, t.linear(linear)
    else:
        fake, config = jira, t.jira(jira)
    iid = t.interaction()
    # The provider files the issue, then the connection drops before Relay hears the answer.
    fake.fail_next(DROP)
    got = t.linked(iid, provider)
    t.jobs_done()

    if provider == "github":
        filed = github.repo_issues("acme", config["repo"])
        creates = github.calls("POST", f"/repos/acme/{config['repo']}/issues")
        lookups = github.calls("GET", f"/repos/acme/{config['repo']}/issues")
    elif provider == "linear":
        filed = linear.team_issues(config["team_id"])
        mine = [c for c in linear.calls("POST", "/graphql") if c.headers["authorization"] == config["api_key"]]
        creates = [c for c in mine if "issueCreate" in c.json["query"]]
        lookups = [c for c in mine if "issues(" in c.json["query"]]
    else:
        filed = jira.project_issues(config["project_key"])
        creates = [c for c in jira.calls("POST", "/rest/api/3/issue")
                   if c.json["fields"]["project"]["key"] == config["project_key"]]
        lookups = [c for c in jira.calls("POST", "/rest/api/3/search/jql") if config["project_key"] in c.json["jql"]]
    [issue] = filed
    assert got["linked_issue_id"] == str(issue["id"])
    # Filed once; the retry asked the provider for it instead of filing again.
    assert len(creates) == 1 and len(lookups) == 1
    journal = t.journal(iid, provider)
    assert journal is not None and journal["external_id"] == str(issue["id"])
    assert journal["completed_at"] is not None and journal["last_error"] is None
    assert sql(t.dsn, "SELECT count(*) AS n FROM integration_links WHERE project_id = $1",
               uuid.UUID(t.id))[0]["n"] == 1


def test_concurrent_requests_and_a_transient_error_file_one_issue(router: httpx.Client, topo: dict[str, Any],
                                                                  github: gh.FakeGitHub) -> None:
    t = Tracked(router, topo, "us-west")
    config = t.github(github)
    iid = t.interaction()
    github.fail_next(status=503, body={"message": "Service unavailable"})  # the first attempt is retried
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: t.request(iid, "github"), range(8)))
    assert {a.status_code for a in answers} <= {200, 202}, [a.text for a in answers]
    wait_for("the linked issue", lambda: t.get(iid)["linked_issue_id"])
    t.jobs_done()

    assert len(github.repo_issues("acme", config["repo"])) == 1
    assert sql(t.dsn, "SELECT count(*) AS n FROM integration_links WHERE project_id = $1",
               uuid.UUID(t.id))[0]["n"] == 1
    assert len([a for a in t.audit(iid) if a["action"] == "interaction.issue_linked"]) == 1


def test_a_refused_token_is_recorded_and_not_retried(router: httpx.Client, topo: dict[str, Any],
                                                     github: gh.FakeGitHub) -> None:
    t = Tracked(router, topo)
    config = t.github(github, allowed=False)
    iid = t.interaction()
    assert t.request(iid, "github").status_code == 202
    journal = wait_for("the recorded error", lambda: (j := t.journal(iid, "github")) and j["last_error"] and j)
    assert journal["last_error"] == "github create issue: HTTP 401" and journal["completed_at"] is None
    t.jobs_done()
    assert len(github.calls("POST", f"/repos/acme/{config['repo']}/issues")) == 1
    assert t.get(iid)["linked_issue_id"] is None
    assert config["token"] not in json.dumps(journal, default=str)


def test_requesting_an_issue_checks_scope_project_provider_and_config(router: httpx.Client, topo: dict[str, Any],
                                                                      github: gh.FakeGitHub) -> None:
    t = Tracked(router, topo)
    other = Tracked(router, topo)
    iid = t.interaction()
    foreign = other.interaction()

    # No integration yet, then a disabled one.
    assert "no enabled github integration" in problem(t.request(iid, "github"), 409)["detail"]
    t.github(github)
    r = router.patch(f"{t.base}/integrations/github", headers=t.admin.h, json={"enabled": False})
    assert r.status_code == 200, r.text
    problem(t.request(iid, "github"), 409)
    r = router.patch(f"{t.base}/integrations/github", headers=t.admin.h, json={"enabled": True})
    assert r.status_code == 200, r.text

    # Scope: read and ingest keys may not file issues; another project's admin and interactions are 404s.
    problem(t.request(iid, "github", t.admin.key(t.project, ["read"])["h"]), 403)
    problem(t.request(iid, "github", t.ingest["h"]), 403)
    problem(t.request(iid, "github", other.admin.h), 404)
    problem(t.request(iid, "github", other.write["h"]), 404)
    problem(t.request(foreign, "github"), 404)
    problem(t.request(str(uuid.uuid4()), "github"), 404)

    # Only issue trackers; the body is checked field by field.
    body = problem(t.request(iid, "slack"), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/provider"]
    r = router.post(f"{t.base}/interactions/{iid}/links", headers=t.write["h"], json={})
    assert problem(r, 422)["errors"][0]["pointer"] == "/provider"
    r = router.post(f"{t.base}/interactions/{iid}/links", headers=t.write["h"],
                    json={"provider": "github", "extra": 1})
    problem(r, 422)
    assert sql(t.dsn, "SELECT count(*) AS n FROM outbox WHERE project_id = $1 AND kind = 'integration.create_issue'",
               uuid.UUID(t.id))[0]["n"] == 0

    # GET on the same path is still the feedback area's listing.
    r = router.get(f"{t.base}/interactions/{iid}/links", headers=t.admin.h)
    assert r.status_code == 200 and r.json() == {"data": [], "next_cursor": None}
    # The agent role may file issues.
    r = t.request(iid, "github")
    assert r.status_code == 202 and r.headers["x-relay-region"] == "eu-west"


# Webhooks -----------------------------------------------------------------------------------------------------


def test_github_close_resolves_audits_and_notifies_once(router: httpx.Client, topo: dict[str, Any],
                                                        github: gh.FakeGitHub) -> None:
    t = Tracked(router, topo)
    config = t.github(github)
    iid = t.interaction()
    got = t.linked(iid, "github")
    [issue] = github.repo_issues("acme", config["repo"])
    secret = config["webhook_secret"]

    headers, body = gh.delivery(issue, "closed", secret)
    r = t.hook("github", headers, body)
    assert r.status_code == 200, r.text
    assert r.json() == {"state": "closed", "changed": 1} and r.headers["x-relay-region"] == "eu-west"
    assert t.get(iid)["status"] == "resolved"
    notes = t.outbox("notify.issue_closed")
    assert notes == [{"project_id": t.id, "interaction_id": iid, "provider": "github",
                      "external_id": str(issue["id"]), "external_url": got["linked_issue_url"],
                      "resolution": "completed"}]
    assert {"interaction_id": iid, "fields": ["status"]} in t.outbox("interaction.updated")
    closed = [a for a in t.audit(iid) if a["action"] == "interaction.issue_closed"]
    assert len(closed) == 1 and closed[0]["actor_type"] == "system"
    assert closed[0]["actor_id"] == "integration:github"
    assert closed[0]["meta"] == {"provider": "github", "external_id": str(issue["id"]), "resolution": "completed",
                                 "status_from": "new", "status_to": "resolved"}
    assert closed[0]["ip_address"] in (None, "127.0.0.0")

    # The same delivery again (GitHub redelivers on timeouts) changes nothing and notifies nobody.
    r = t.hook("github", headers, body)
    assert r.status_code == 200 and r.json() == {"state": "closed", "changed": 0}
    assert len(t.outbox("notify.issue_closed")) == 1

    # Reopened, then closed as not planned: a second close is news; the status stays where it is.
    r = t.hook("github", *gh.delivery(issue, "reopened", secret))
    assert r.json() == {"state": "open", "changed": 1}
    r = t.hook("github", *gh.delivery(issue, "closed", secret, state_reason="not_planned"))
    assert r.json() == {"state": "closed", "changed": 1}
    assert [n["resolution"] for n in t.outbox("notify.issue_closed")] == ["completed", "not_planned"]
    assert t.get(iid)["status"] == "resolved"
    assert [a["action"] for a in t.audit(iid)][-3:] == [
        "interaction.issue_closed", "interaction.issue_reopened", "interaction.issue_closed"]

    # Other events are acknowledged and ignored.
    r = t.hook("github", *gh.delivery(issue, "closed", secret, event="ping"))
    assert r.status_code == 200 and r.json() == {"state": None, "changed": 0}


def test_bad_signatures_are_refused_and_change_nothing(router: httpx.Client, topo: dict[str, Any],
                                                       github: gh.FakeGitHub, linear: ln.FakeLinear,
                                                       jira: jr.FakeJira) -> None:
    t = Tracked(router, topo, "us-west")
    configs = {"github": t.github(github), "linear": t.linear(linear), "jira": t.jira(jira)}
    iid = t.interaction()
    for provider in configs:
        t.linked(iid, provider)
    issues = {"github": github.repo_issues("acme", configs["github"]["repo"])[0],
              "linear": linear.team_issues(configs["linear"]["team_id"])[0],
              "jira": jira.project_issues(configs["jira"]["project_key"])[0]}
    closing: dict[str, Callable[[str], tuple[dict[str, str], bytes]]] = {
        "github": lambda secret: gh.delivery(issues["github"], "closed", secret),
        "linear": lambda secret: ln.delivery(issues["linear"], "completed", secret),
        "jira": lambda secret: jr.delivery(issues["jira"], "done", secret),
    }
    signature = {"github": "X-Hub-Signature-256", "linear": "Linear-Signature", "jira": "X-Hub-Signature"}
    before = t.get(iid)
    for provider, deliver in closing.items():
        headers, body = deliver(configs[provider]["webhook_secret"])
        tampered = body.replace(b'"', b' "', 1)  # the same JSON, other bytes: the signature covers the raw body
        problem(t.hook(provider, headers, tampered), 401)
        problem(t.hook(provider, *deliver("not-the-secret")), 401)
        problem(t.hook(provider, {k: v for k, v in headers.items() if k != signature[provider]}, body), 401)
        # The other providers' signature schemes do not stand in for this one's.
        problem(t.hook("jira" if provider == "github" else "github", headers, body), 401)
    # Linear: a delivery signed correctly but older than a minute is a replay.
    stale = ln.delivery(issues["linear"], "completed", configs["linear"]["webhook_secret"],
                        timestamp_ms=int(time.time() * 1000) - 5 * 60_000)
    assert "webhookTimestamp" in problem(t.hook("linear", *stale), 401)["detail"]
    problem(t.hook("slack", {"Content-Type": "application/json"}, b"{}"), 404)

    assert t.get(iid) == before
    assert t.outbox("notify.issue_closed") == []
    assert sql(t.dsn, "SELECT count(*) AS n FROM integration_links WHERE project_id = $1 AND external_state <> 'open'",
               uuid.UUID(t.id))[0]["n"] == 0


def test_linear_done_and_jira_wont_do_close_the_interaction(router: httpx.Client, topo: dict[str, Any],
                                                            linear: ln.FakeLinear, jira: jr.FakeJira) -> None:
    t = Tracked(router, topo)
    lin, jir = t.linear(linear), t.jira(jira)
    fixed, declined = t.interaction(), t.interaction()
    t.linked(fixed, "linear")
    t.linked(declined, "jira")
    lin_issue = linear.team_issues(lin["team_id"])[0]
    jira_issue = jira.project_issues(jir["project_key"])[0]

    r = t.hook("linear", *ln.delivery(lin_issue, "started", lin["webhook_secret"]))
    assert r.status_code == 200 and r.json() == {"state": "open", "changed": 0}  # was open already
    r = t.hook("linear", *ln.delivery(lin_issue, "completed", lin["webhook_secret"]))
    assert r.status_code == 200 and r.json() == {"state": "closed", "changed": 1}
    assert t.get(fixed)["status"] == "resolved"

    r = t.hook("jira", *jr.delivery(jira_issue, "done", jir["webhook_secret"], resolution="Won't Do"))
    assert r.status_code == 200 and r.json() == {"state": "closed", "changed": 1}
    assert t.get(declined)["status"] == "closed"
    r = t.hook("jira", *jr.delivery(jira_issue, "done", jir["webhook_secret"], resolution="Won't Do"))
    assert r.json() == {"state": "closed", "changed": 0}
    assert [(n["interaction_id"], n["provider"], n["resolution"]) for n in t.outbox("notify.issue_closed")] == [
        (fixed, "linear", "completed"), (declined, "jira", "not_planned")]
    assert {n["external_url"] for n in t.outbox("notify.issue_closed")} == {
        lin_issue["url"], f"{jira.url}/browse/{jira_issue['key']}"}


def test_a_webhook_for_one_project_never_touches_another(router: httpx.Client, topo: dict[str, Any],
                                                         github: gh.FakeGitHub) -> None:
    a, b = Tracked(router, topo), Tracked(router, topo)
    a_config, b_config = a.github(github), b.github(github)
    victim = b.interaction()
    b.linked(victim, "github")
    [issue] = github.repo_issues("acme", b_config["repo"])

    # A's own secret, A's own path, B's issue id: A has no such link, so nothing happens anywhere.
    r = a.hook("github", *gh.delivery(issue, "closed", a_config["webhook_secret"]))
    assert r.status_code == 200 and r.json() == {"state": "closed", "changed": 0}
    # A's secret on B's path does not verify.
    problem(a.hook("github", *gh.delivery(issue, "closed", a_config["webhook_secret"]), project_id=b.id), 401)
    # No project, or one this router does not know: 404 without a word about which.
    problem(a.hook("github", *gh.delivery(issue, "closed", a_config["webhook_secret"]),
                   project_id=str(uuid.uuid4())), 404)
    problem(router.post("/v1/hooks/not-a-uuid/github", content=b"{}"), 404)
    assert b.get(victim)["status"] == "new" and b.outbox("notify.issue_closed") == []
    assert a.outbox("notify.issue_closed") == []

    # B's own delivery works.
    r = b.hook("github", *gh.delivery(issue, "closed", b_config["webhook_secret"]))
    assert r.json() == {"state": "closed", "changed": 1} and b.get(victim)["status"] == "resolved"


def test_a_project_without_the_integration_refuses_every_delivery(router: httpx.Client, topo: dict[str, Any],
                                                                  github: gh.FakeGitHub) -> None:
    t = Tracked(router, topo)
    issue = {"id": 1, "number": 1, "html_url": "https://github.com/acme/app/issues/1", "title": "x"}
    problem(t.hook("github", *gh.delivery(issue, "closed", "")), 401)
    problem(t.hook("github", *gh.delivery(issue, "closed", "guess")), 401)
    # Configured without a webhook secret: still nothing to verify with.
    token = "ghp_" + secrets.token_hex(18)
    r = router.put(f"{t.base}/integrations/github", headers=t.admin.h,
                   json={"config": {"owner": "acme", "repo": "app", "token": token, "api_url": github.url}})
    assert r.status_code == 201, r.text
    problem(t.hook("github", *gh.delivery(issue, "closed", "")), 401)
