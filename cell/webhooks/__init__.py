"""Outbound webhooks: project events delivered to customer URLs, signed per Standard Webhooks.

The delivery worker (a later issue) takes pending `webhook_deliveries` rows that
are due, re-checks the destination with `check_destination`, signs with
`signing_secret` and records the outcome; `fan_out` queues an event for every
subscribed webhook in the caller's transaction.
"""

from cell.webhooks.queries import check_destination, fan_out, signing_secret
from cell.webhooks.types import EVENTS, TEST_EVENT

__all__ = ["EVENTS", "TEST_EVENT", "check_destination", "fan_out", "signing_secret"]
