"""Delivering webhooks: one signed POST per attempt, to the address the SSRF guard vetted, retried with backoff.

A delivery row (`webhook_deliveries`) is claimed before it is sent: the claim
counts the attempt and pushes `next_attempt_at` out by a lease, so the fan-out
job and the cron that sweeps due rows never send one row at the same time, and
a worker that dies mid-send leaves the row to be picked up again once the lease
ends. Receivers see the same `webhook-id` (the delivery id) on every attempt and
dedupe on it; each attempt is signed afresh with its own `webhook-timestamp`, as
the Standard Webhooks spec has it. 2xx is delivered; anything else is retried
5 s, 20 s, 80 s … later (up to 6 h apart) until `MAX_ATTEMPTS`, then `failed`.

The destination is vetted again at every attempt (`check_destination`): DNS may
now point the name at a private address, and then the delivery fails at once
without being sent. The request goes to one of the vetted addresses itself,
with the name in the Host header and in TLS (SNI and the certificate check), so
a resolver that changes its answer after the check (DNS rebinding) cannot steer
it anywhere else; redirects are not followed. Errors are recorded by kind
("HTTP 500", "timed out"), never with the URL, which may carry a token.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import ssl
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import msgspec
from standardwebhooks import Webhook as Signer

from cell import netguard
from cell.secrets import SecretError
from cell.settings import CellSettings
from cell.webhooks.queries import check_destination, signing_secret

log = logging.getLogger("relay.webhooks")

TIMEOUT = httpx.Timeout(10.0, connect=5.0)
"""A receiver should answer quickly and do its work later; a slow one is retried, not waited on."""
MAX_ATTEMPTS = 8
"""Attempts before a delivery is given up (`failed`): about 8 hours of retries."""
FIRST_RETRY = 5.0
BACKOFF = 4.0
MAX_DELAY = 6 * 3600.0
LEASE = timedelta(seconds=60)
"""How long a claimed delivery is held: longer than one attempt can take, so only a dead worker's rows return."""
BATCH = 10
"""Deliveries claimed (and sent concurrently) at a time."""
SWEEP_SECONDS = 40.0
"""How long one sweep keeps claiming batches; the next sweep carries on."""
MAX_ADDRESSES = 2
"""Vetted addresses tried in turn when a connection cannot be made."""
USER_AGENT = "Relay-Webhooks/1.0"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt came to: the receiver's status code or why there was none; `final` means no retry."""

    status_code: int | None
    error: str | None
    final: bool = False

    @property
    def delivered(self) -> bool:
        """Whether the receiver accepted it (2xx)."""
        return self.status_code is not None and 200 <= self.status_code < 300


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed attempt: 5 s, 20 s, 80 s … capped at 6 h, with ±20 % jitter
    so deliveries that failed together (a receiver's outage) do not all come back at the same second."""
    seconds = min(FIRST_RETRY * BACKOFF ** max(attempts - 1, 0), MAX_DELAY)
    return timedelta(seconds=seconds * random.uniform(0.8, 1.2))


def _host_header(dest: netguard.Destination) -> str:
    host = f"[{dest.host}]" if ":" in dest.host else dest.host
    default = 443 if dest.scheme == "https" else 80
    return host if dest.port == default else f"{host}:{dest.port}"


@functools.cache
def _tls() -> ssl.SSLContext:
    """The TLS settings https deliveries use (httpx's defaults: its CA bundle, host names checked), built once."""
    return httpx.create_ssl_context(trust_env=False)


async def post_vetted(http: httpx.AsyncClient, url: str, dest: netguard.Destination, body: bytes,
                      headers: Mapping[str, str]) -> int:
    """POST `body` to `url` at one of the addresses the guard vetted; the response's status code.

    The URL's host is replaced by the address, the name goes in the Host header and (for https) in SNI, where
    the certificate is checked against it. An https request gets a connection of its own: a pooled one to the
    same address may have been verified for another name. The response body is never read. Raises
    `httpx.HTTPError`.
    """
    parts = urlsplit(url)
    error: httpx.HTTPError | None = None
    for ip in dest.addresses[:MAX_ADDRESSES]:
        netloc = f"[{ip}]:{dest.port}" if ip.version == 6 else f"{ip}:{dest.port}"
        target = urlunsplit((dest.scheme, netloc, parts.path or "/", parts.query, ""))
        try:
            if dest.scheme == "https":
                async with httpx.AsyncClient(trust_env=False, verify=_tls(), follow_redirects=False) as own:
                    return await _post(own, target, body, headers, dest, {"sni_hostname": dest.host})
            return await _post(http, target, body, headers, dest, {})
        except httpx.ConnectError as exc:  # this address does not answer; another vetted one may
            error = exc
    assert error is not None  # check_url never vets an empty list
    raise error


async def _post(http: httpx.AsyncClient, target: str, body: bytes, headers: Mapping[str, str],
                dest: netguard.Destination, extensions: dict[str, Any]) -> int:
    async with http.stream("POST", target, content=body, headers={**headers, "Host": _host_header(dest)},
                           timeout=TIMEOUT, follow_redirects=False, extensions=extensions) as response:
        return response.status_code


async def guarded_post(http: httpx.AsyncClient, settings: CellSettings, url: str, body: bytes,
                       headers: Mapping[str, str]) -> int:
    """Vet `url` now and POST to the vetted address (for Slack as for webhooks); the status code.

    Raises `cell.netguard.Refused` or `httpx.HTTPError`.
    """
    dest = await check_destination(settings, url)
    return await post_vetted(http, url, dest, body, headers)


def signed_headers(secret: str, message_id: str, body: bytes, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: its id (stable across retries), time and signature."""
    return {"content-type": "application/json", "user-agent": USER_AGENT, "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Signer(secret).sign(message_id, now, body.decode())}


async def send(http: httpx.AsyncClient, settings: CellSettings, url: str, secret: str, message_id: str,
               payload: dict[str, Any]) -> Attempt:
    """One attempt: vet the destination, sign, POST. The receiver's faults are an Attempt, never an exception."""
    body = msgspec.json.encode(payload)
    try:
        dest = await check_destination(settings, url)
    except netguard.Refused as exc:
        return Attempt(None, f"destination refused: {exc}", final=True)
    headers = signed_headers(secret, message_id, body, datetime.now(UTC))
    try:
        code = await post_vetted(http, url, dest, body, headers)
    except httpx.TimeoutException:
        return Attempt(None, "timed out")
    except httpx.HTTPError as exc:
        return Attempt(None, f"connection failed ({type(exc).__name__})")
    return Attempt(code, None if 200 <= code < 300 else f"HTTP {code}")


_CLAIMED = "d.id, d.project_id, d.webhook_id, d.event, d.payload, d.attempts, w.url, w.enabled"


async def claim(pool: asyncpg.Pool, *, event_key: str | None = None, limit: int = BATCH) -> list[asyncpg.Record]:
    """Take up to `limit` due pending deliveries (only those of one event with `event_key`), oldest first:
    the attempt is counted now and the rows are held for `LEASE`, so no one else sends them meanwhile."""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""UPDATE webhook_deliveries d SET attempts = d.attempts + 1, next_attempt_at = now() + $3::interval
              FROM webhooks w
             WHERE d.id IN (SELECT id FROM webhook_deliveries
                             WHERE status = 'pending' AND next_attempt_at <= now()
                               AND ($1::text IS NULL OR event_key = $1)
                             ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
               AND w.project_id = d.project_id AND w.id = d.webhook_id
         RETURNING {_CLAIMED}""", event_key, limit, LEASE)
    return rows


async def record(pool: asyncpg.Pool, row: asyncpg.Record, attempt: Attempt) -> str:
    """Store the attempt's outcome on the claimed row; the delivery's status after it.

    Written only while the claim is still ours (same attempt count, still pending).
    """
    if attempt.delivered:
        status = "delivered"
    elif attempt.final or row["attempts"] >= MAX_ATTEMPTS:
        status = "failed"
    else:
        status = "pending"
    await pool.execute(
        """UPDATE webhook_deliveries
              SET status = $3, last_status_code = $4, last_error = $5,
                  next_attempt_at = CASE WHEN $3 = 'pending' THEN now() + $6::interval END,
                  delivered_at = CASE WHEN $3 = 'delivered' THEN now() END
            WHERE id = $1 AND attempts = $2 AND status = 'pending'""",
        row["id"], row["attempts"], status, attempt.status_code, (attempt.error or "")[:500] or None,
        retry_delay(row["attempts"]))
    return status


async def deliver(ctx: dict[str, Any], row: asyncpg.Record) -> str | None:
    """Make one attempt at a claimed delivery and record it; its status after, None if the webhook is gone."""
    pool: asyncpg.Pool = ctx["pool"]
    settings: CellSettings = ctx["settings"]
    if not row["enabled"]:
        attempt = Attempt(None, "webhook disabled", final=True)
    else:
        try:
            secret = await signing_secret(pool, settings, row["project_id"], row["webhook_id"])
        except SecretError:
            attempt = Attempt(None, "the signing secret does not open with this cell's key", final=True)
        else:
            if secret is None:
                return None  # deleted meanwhile; its deliveries went with it
            attempt = await send(ctx["http"], settings, row["url"], secret, message_id(row["id"]), row["payload"])
    status = await record(pool, row, attempt)
    log.info("webhook delivery %s", status, extra={
        "project_id": str(row["project_id"]), "webhook_id": str(row["webhook_id"]), "delivery_id": str(row["id"]),
        "event": row["event"], "attempt": row["attempts"], "status_code": attempt.status_code})
    return status


async def deliver_all(ctx: dict[str, Any], rows: list[asyncpg.Record]) -> None:
    """Attempt claimed deliveries concurrently; a row whose outcome could not be recorded returns after its lease."""
    async with asyncio.TaskGroup() as group:
        for row in rows:
            group.create_task(deliver(ctx, row))


async def deliver_due_webhooks(ctx: dict[str, Any]) -> int:
    """Cron: send what is due (retries, test deliveries, rows a dead worker left), batch by batch; how many."""
    loop = asyncio.get_running_loop()
    stop = loop.time() + SWEEP_SECONDS
    sent = 0
    while loop.time() < stop:
        rows = await claim(ctx["pool"])
        if not rows:
            break
        await deliver_all(ctx, rows)
        sent += len(rows)
    return sent


KEEP_FINISHED = timedelta(days=30)
"""How long a delivered or failed delivery (and the copy of the event it holds) stays in the history."""


async def prune_webhook_deliveries(ctx: dict[str, Any]) -> int:
    """Cron: drop finished deliveries older than `KEEP_FINISHED`, a batch at a time; how many."""
    pool: asyncpg.Pool = ctx["pool"]
    removed = 0
    while True:
        result: str = await pool.execute(
            """DELETE FROM webhook_deliveries WHERE id IN (
                   SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < now() - $1::interval
                    LIMIT 1000)""", KEEP_FINISHED)
        count = int(result.split()[-1])
        removed += count
        if count < 1000:
            return removed


def message_id(delivery_id: uuid.UUID) -> str:
    """The `webhook-id` of a delivery: its id, the same on every attempt, as shown by `GET …/deliveries`."""
    return str(delivery_id)
