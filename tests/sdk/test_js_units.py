"""The SDK's own unit tests (vitest + happy-dom: buffers, masking, queue, backoff) and its strict type check,
run from the Python suite so `make test` covers them. `make install` has run `npm ci` in sdk/js."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SDK = Path(__file__).resolve().parents[2] / "sdk" / "js"


def _npx() -> str:
    npx = shutil.which("npx")
    if npx is None or not (SDK / "node_modules").is_dir():
        message = "the SDK's tests need Node and `make install` (npm ci in sdk/js)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return npx


def test_vitest() -> None:
    run = subprocess.run([_npx(), "vitest", "run", "--reporter=dot"], cwd=SDK, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "CI": "true", "NO_COLOR": "1"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and " failed" not in run.stdout


def test_typescript_is_strict_and_clean() -> None:
    run = subprocess.run([_npx(), "tsc", "--noEmit", "-p", "."], cwd=SDK, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:]
