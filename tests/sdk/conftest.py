"""The system the SDK tests drive: `relay dev`'s topology with a dashboard origin configured, so the CORS
policy of management paths can be seen both ways."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Admin, Stack
from tests.services import StorePostgres

DASHBOARD_ORIGIN = "https://admin.example.com"


@pytest.fixture(scope="module")
def sdk_stack(pg: StorePostgres, scratch: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """A private topology per test module (each module of this folder runs in one xdist process)."""
    name = "sdk_" + request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    running = Stack(pg, scratch, name, router_env={"RELAY_DASHBOARD_ORIGINS": json.dumps([DASHBOARD_ORIGIN])})
    yield running
    running.close()


@pytest.fixture(scope="module")
def relay(sdk_stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sdk_stack.dev.topology["router"]["url"], timeout=30, trust_env=False) as client:
        yield client


@pytest.fixture(scope="module")
def owner(relay: httpx.Client) -> Admin:
    return Admin(relay)
