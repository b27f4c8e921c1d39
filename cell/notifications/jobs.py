"""Worker jobs of notifications: tell people a linked issue closed, tell the team about a severe new bug.

`notify.issue_closed` {interaction_id, provider, external_url, external_id?,
resolution?} (written when a provider's webhook says a linked issue closed)
emails every recipient of the interaction and its duplicate group
(`recipients.for_interaction`: verified end users only, once the project has an
identity secret) through the project's `email` integration, else the cell's own
mailer (`RELAY_SMTP_URL`, or `.eml` files in `RELAY_MAIL_DIR`), and posts one
Slack message. The event is the
closed issue itself, so an issue that several duplicates link to, or a
provider webhook that arrives twice, still tells each person once.
`interaction.created` of a `bug` with severity high or critical is posted to
Slack.

A message that failed for a passing reason (server down, 5xx, timeout) makes
the job fail after the others were tried; the retry sends only what the ledger
does not hold yet. A configuration that cannot work (destination refused,
secret that no longer opens, a 4xx from Slack, an address the server rejects
for good) is logged — without the address or URL — and not retried.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from typing import Any

import asyncpg
import httpx

from cell import netguard
from cell.integrations import EmailConfig, ProviderConfig, SlackConfig, load_integration, mark_synced
from cell.jobs import Cron, Job
from cell.notifications import email, recipients, slack
from cell.notifications.sent import EMAIL, SLACK, Ledger, recipient_key
from cell.secrets import SecretError
from cell.settings import CellSettings
from common.mail import Mailer

log = logging.getLogger("relay.notifications")

SEVERE = ("high", "critical")

_WORDING: dict[str, tuple[str, str, str]] = {  # headline when done, when closed otherwise, why they hear of it
    "reporter": ("The problem you reported has been fixed", "The problem you reported has been closed",
                 "you reported this problem"),
    "chat": ("The problem you told us about has been fixed", "The problem you told us about has been closed",
             "you told us about this problem in a chat"),
    "voter": ("A request you voted for has been resolved", "A request you voted for has been closed",
              "you voted for a request linked to it"),
}


class NotSent(Exception):
    """Some messages could not be sent for now; the retry sends only those (the message names no one)."""


def safe_url(url: object) -> str | None:
    """The issue link if it is a plain http(s) URL fit for an email and a Slack link, else None."""
    if not isinstance(url, str) or len(url) > 2048 or not url.startswith(("https://", "http://")):
        return None
    if any(c.isspace() or ord(c) < 32 or c in "<>\"|" for c in url):
        return None
    return url


def _project_name(name: str) -> str:
    return slack.clip(name, 100) or "Relay"


async def _config(pool: asyncpg.Pool, settings: CellSettings, project_id: uuid.UUID,
                  provider: str) -> ProviderConfig | None:
    """The enabled integration, or None; one whose secrets no longer open is a configuration error, not a retry."""
    try:
        return await load_integration(pool, settings, project_id, provider)
    except SecretError:
        log.warning("integration secret does not open; not sending",
                    extra={"project_id": str(project_id), "provider": provider})
        return None


def email_body(project: str, role: str, url: str | None, completed: bool = True) -> tuple[str, str]:
    """Subject and text of the email to one person; it says why they get it and shows nobody else's words."""
    done, closed, why = _WORDING[role]
    headline = done if completed else closed
    lines = ["Hello,", "", f"{headline}."]
    lines += ["", "The issue that tracked it is now closed:", url] if url else [
        "", "The issue that tracked it is now closed."]
    lines += ["", f"You are receiving this one-time message from {project} because {why}.", ""]
    return f"{project}: {headline}", "\n".join(lines)


async def _email_everyone(mailer: Mailer, ledger: Ledger, todo: list[tuple[recipients.Recipient, str]],
                          project: str, url: str | None, completed: bool) -> tuple[int, list[str]]:
    """Email each person not yet emailed for this event in one mail session; how many, and the passing failures."""
    sent, retry = 0, []
    try:
        async with mailer.session() as outbox:
            for person, key in todo:
                subject, body = email_body(project, person.role, url, completed)
                try:
                    await outbox.send(person.email, subject, body)
                except email.SendError as exc:
                    if exc.permanent:
                        log.warning("email refused for one recipient: %s", exc,
                                    extra={"project_id": str(ledger.project_id)})
                        continue
                    retry.append(f"email: {exc}")
                    break  # the session is likely gone; the retry starts a new one
                await ledger.record(EMAIL, key, person.user_id)
                sent += 1
    except netguard.Refused as exc:
        log.warning("SMTP destination refused: %s", exc, extra={"project_id": str(ledger.project_id)})
    except email.SendError as exc:
        retry.append(f"email: {exc}")
    return sent, retry


async def _slack(http: httpx.AsyncClient, settings: CellSettings, config: SlackConfig, ledger: Ledger,
                 text: str, blocks: list[dict[str, Any]]) -> tuple[bool, list[str]]:
    """Post to Slack unless this event already did; whether it was posted now, and the passing failure if any."""
    if ledger.sent(SLACK, SLACK):
        return False, []
    try:
        await slack.post(http, settings, config, text, blocks)
    except slack.SendError as exc:
        if exc.permanent:
            log.warning("Slack message not accepted: %s", exc, extra={"project_id": str(ledger.project_id)})
            return False, []
        return False, [f"slack: {exc}"]
    await ledger.record(SLACK, SLACK)
    await mark_synced(ledger.conn, ledger.project_id, "slack")
    return True, []


async def issue_closed(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Tell the reporter, voters and chat participants of an interaction (and its duplicates) that its linked
    issue closed, and the team on Slack; each of them once, whatever retries or duplicate events happen."""
    pool: asyncpg.Pool = ctx["pool"]
    settings: CellSettings = ctx["settings"]
    interaction_id = uuid.UUID(payload["interaction_id"])
    row = await pool.fetchrow(
        """SELECT i.project_id, p.name, i.linked_issue_url, i.linked_issue_provider::text AS provider
             FROM interactions i JOIN projects p ON p.id = i.project_id WHERE i.id = $1""", interaction_id)
    if row is None:
        return  # erased or deleted since
    project_id: uuid.UUID = row["project_id"]
    provider = str(payload.get("provider") or row["provider"] or "")
    url = safe_url(payload.get("external_url") or row["linked_issue_url"])
    external_id = payload.get("external_id")
    completed = payload.get("resolution") in (None, "completed")
    issue = (f"{provider}|id|{external_id}" if external_id else f"{provider}|url|{url}" if url
             else f"interaction|{interaction_id}")
    event = "issue_closed:" + hashlib.sha256(issue.encode()).hexdigest()[:40]
    mail = await _config(pool, settings, project_id, "email")
    chat = await _config(pool, settings, project_id, "slack")
    mailer = (email.project_mailer(settings, mail) if isinstance(mail, EmailConfig)
              else email.operator_mailer(settings))
    if mailer is None and not isinstance(chat, SlackConfig):
        return
    project = _project_name(row["name"])
    retry: list[str] = []
    people: list[recipients.Recipient] = []
    emailed = 0
    async with pool.acquire() as conn, Ledger(conn, project_id, event) as ledger:
        if mailer is not None:
            people = await recipients.for_interaction(conn, project_id, interaction_id)
            keys = [(person, recipient_key(settings, person.email)) for person in people]
            todo = [(person, key) for person, key in keys if not ledger.sent(EMAIL, key)]
            if todo:
                sent, failed = await _email_everyone(mailer, ledger, todo, project, url, completed)
                if sent and isinstance(mail, EmailConfig):
                    await mark_synced(conn, project_id, "email")
                retry += failed
            emailed = sum(ledger.sent(EMAIL, key) for _, key in keys)
        if isinstance(chat, SlackConfig):
            where = slack.link(url, url) if url else "the linked issue"
            told = f"{emailed} of {len(people)} people told by email." if mailer is not None else ""
            text = f"Issue closed in {project}: {url or 'linked issue'}. {told}".strip()
            blocks: list[dict[str, Any]] = [
                {"type": "section", "text": {"type": "mrkdwn",
                                             "text": f":white_check_mark: *Issue closed* in {slack.escape(project)}: "
                                                     f"{where}\n{told}".strip()}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Interaction `{interaction_id}`"}]},
            ]
            retry += (await _slack(ctx["http"], settings, chat, ledger, text, blocks))[1]
    log.info("issue_closed notifications", extra={"project_id": str(project_id), "recipients": len(people),
                                                   "failures": len(retry)})
    if retry:
        raise NotSent("; ".join(retry))


async def new_bug(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    """Post a new high or critical bug to the project's Slack, once."""
    pool: asyncpg.Pool = ctx["pool"]
    settings: CellSettings = ctx["settings"]
    interaction_id = uuid.UUID(payload["interaction_id"])
    row = await pool.fetchrow(
        """SELECT i.project_id, i.type::text AS type, i.severity::text AS severity, i.content_json, i.content_text,
                  p.name
             FROM interactions i JOIN projects p ON p.id = i.project_id WHERE i.id = $1""", interaction_id)
    if row is None or row["type"] != "bug" or row["severity"] not in SEVERE:
        return
    chat = await _config(pool, settings, row["project_id"], "slack")
    if not isinstance(chat, SlackConfig):
        return
    content = row["content_json"] or {}
    title = content.get("title") if isinstance(content.get("title"), str) else None
    words = slack.clip(title or row["content_text"] or "(no description)", 300)
    project = _project_name(row["name"])
    text = f"New {row['severity']} bug in {project}: {slack.clip(words, 150)}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": f":rotating_light: *New {row['severity']} bug* in "
                                             f"{slack.escape(project)}\n>{slack.escape(words)}"}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"Interaction `{interaction_id}`"}]},
    ]
    async with pool.acquire() as conn, Ledger(conn, row["project_id"], f"new_bug:{interaction_id}") as ledger:
        _, retry = await _slack(ctx["http"], settings, chat, ledger, text, blocks)
    if retry:
        raise NotSent("; ".join(retry))


KEEP_SENT = 180
"""Days the ledger remembers a message: long past any retry or redelivered provider webhook."""


async def prune_notifications_sent(ctx: dict[str, Any]) -> int:
    """Cron: forget ledger entries older than `KEEP_SENT` days; how many."""
    pool: asyncpg.Pool = ctx["pool"]
    result: str = await pool.execute(
        "DELETE FROM notifications_sent WHERE sent_at < now() - make_interval(days => $1)", KEEP_SENT)
    return int(result.split()[-1])


JOBS = [
    Job("notify.issue_closed", issue_closed, timeout=120, retries=5, name="notifications.issue_closed"),
    Job("interaction.created", new_bug, timeout=60, retries=5, name="notifications.new_bug"),
]
CRONS = [Cron("notifications.prune", prune_notifications_sent, cron="41 4 * * *", timeout=300)]
