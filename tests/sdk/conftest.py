"""The system the SDK tests drive: `relay dev`'s topology with a dashboard origin configured, so the CORS
policy of management paths can be seen both ways."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from tests.conftest import Admin, Stack
from tests.sdk.browser import ARGS, CHROMIUM, HostSite, need_chromium
from tests.services import StorePostgres

DASHBOARD_ORIGIN = "https://admin.example.com"
# Assertions on the page wait up to 15 s, not Playwright's 5: on a 2-core machine other test processes share,
# a chunk load and a round trip through router and cell have taken longer than 5 s.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="package")
def sdk_stack(pg: StorePostgres, scratch: Path) -> Iterator[Stack]:
    """One topology for this folder's modules in each test process; every test makes its own projects.

    Package-scoped, so it stops when the folder's tests are done: a stack kept to the end of the session holds
    its processes' Postgres connections beside the next module's stack, and a machine's Postgres at the
    default `max_connections = 100` ran out at the end of the suite."""
    # A new name each time: the package's modules may run apart on one process, so it can start again.
    running = Stack(pg, scratch, f"sdk_{secrets.token_hex(3)}",
                    router_env={"RELAY_DASHBOARD_ORIGINS": json.dumps([DASHBOARD_ORIGIN])})
    yield running
    running.close()


@pytest.fixture(scope="package")
def relay(sdk_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sdk_stack.dev.topology["router"]["url"], timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="package")
def owner(relay: httpx.Client) -> Admin:
    return Admin(relay)


@pytest.fixture(scope="module")
def browser(sdk_stack: Stack) -> Iterator[Browser]:
    """Debian's headless Chromium (see tests/sdk/browser.py), per module: while Playwright's sync API runs,
    its event loop holds this thread, so no other fixture may call asyncio.run (the stores' set-up does)."""
    need_chromium()
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="session")
def host() -> Iterator[HostSite]:
    """The customer's site, on another origin than the router."""
    site = HostSite()
    yield site
    site.close()
