"""The registry of worker jobs: each area declares its own in `cell/<area>/jobs.py`.

An area module exports `JOBS` (outbox kinds and their handlers) and may export
`CRONS` (scheduled jobs). The worker runs the union. Several areas may consume
one kind (an `interaction.created` feeds enrichment, webhooks and integrations):
each consumer is its own queued job, retried on its own. An outbox kind that no
area handles stays pending in the outbox instead of being dropped.

Delivery is at least once (see `cell.worker`): a handler may run again after a
crash, a lost queue or an operator's retry, so every handler must be idempotent.
A job that still fails after its retries lands in the `dead_letters` table.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[dict[str, Any], dict[str, Any]], Awaitable[None]]
CronFunction = Callable[[dict[str, Any]], Awaitable[Any]]

# Areas with jobs; a module listed here that does not exist yet is skipped.
JOB_MODULES = (
    "cell.users.jobs",
    "cell.maintenance.jobs",
    "cell.enrichment.jobs",
    "cell.replays.jobs",
    "cell.integrations.jobs",
    "cell.notifications.jobs",
    "cell.webhooks.jobs",
    "cell.exports.jobs",
)


@dataclass(frozen=True)
class Job:
    """One consumer of an outbox kind: its handler, its time budget and how often to retry it.

    `name` identifies the consumer (unique across areas); it defaults to the kind. `retries` counts
    attempts in all (saq's meaning): after the last one fails, the job is dead-lettered. Between attempts
    the worker waits a random time up to `retry_delay * 2**(attempt-1)` seconds, at most `retry_backoff`.
    `timeout` bounds one attempt; an attempt that runs out of time counts as failed.
    """

    kind: str
    handler: Handler
    timeout: int = 60
    retries: int = 5
    name: str = ""
    retry_delay: float = 1.0
    retry_backoff: float = 300.0

    @property
    def id(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True)
class Cron:
    """A scheduled job (cron syntax, UTC)."""

    name: str
    function: CronFunction
    cron: str
    timeout: int = 300


def registry() -> tuple[dict[str, Job], list[Cron]]:
    """Every job (by consumer name) and cron job the areas declare; a name used twice is an error."""
    jobs: dict[str, Job] = {}
    crons: list[Cron] = []
    for name in JOB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
                continue  # the area (or its jobs module) does not exist yet
            raise
        for job in getattr(module, "JOBS", []):
            if job.id in jobs:
                raise RuntimeError(f"job {job.id} is declared twice")
            jobs[job.id] = job
        crons.extend(getattr(module, "CRONS", []))
    return jobs, crons
