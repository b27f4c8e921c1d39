"""The browser SDK's weight: what a customer's page downloads, min+gzip, beside the same figures for the
widgets people compare it with (Sentry's feedback integration, posthog-js and its lazy recorder).

Budgets (issue 12): the eager bundle (core and widget, `relay.js`/`relay.mjs`) at most 15 KB, the replay
chunk loaded on demand at most 35 KB. The anchors are installed from npm into a temporary folder at pinned
versions and bundled by the same esbuild with the same settings; without the registry they are left out.

    python -m bench sdk
"""

from __future__ import annotations

import gzip
import subprocess
import tempfile
from pathlib import Path

from bench.harness import result

SDK = Path(__file__).resolve().parent.parent / "sdk" / "js"
DIST = SDK / "dist"
KB = 1024
BUDGETS = {"relay.js": 15 * KB, "replay.mjs": 35 * KB}
ANCHORS = {"@sentry/browser": "11.17.0", "posthog-js": "1.449.2"}
ENTRIES = {
    # Sentry's error SDK with its user-feedback widget, as its docs set it up.
    "sentry_feedback": 'import * as S from "@sentry/browser"; S.init({dsn: "https://k@o0.ingest.sentry.io/0",'
                       " integrations: [S.feedbackIntegration()]});",
    "sentry_core": 'import * as S from "@sentry/browser"; S.init({dsn: "https://k@o0.ingest.sentry.io/0"});',
    "posthog": 'import posthog from "posthog-js"; posthog.init("phc_x", {api_host: "https://x.example"});',
}


def gz(data: bytes) -> int:
    """Bytes once minified output is gzipped at level 9 (what size-limit and bundlephobia report)."""
    return len(gzip.compress(data, 9))


def build() -> None:
    """Build dist/ when it is missing (make install normally did)."""
    if not (DIST / "relay.js").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=SDK, check=True)
        subprocess.run(["node", "build.mjs"], cwd=SDK, check=True)


def ours() -> None:
    for name, figure in (("relay.js", "eager"), ("relay.mjs", "eager_module"), ("replay.mjs", "replay"),
                         ("screenshot.mjs", "screenshot"), ("extras.mjs", "extras"), ("player.js", "player")):
        size = gz((DIST / name).read_bytes())
        result(f"sdk.{figure}.min_gzip", size / KB, "KB")
        if name in BUDGETS:
            result(f"sdk.{figure}.budget_used", size / BUDGETS[name], "ratio")


def anchors() -> None:
    esbuild = SDK / "node_modules" / ".bin" / "esbuild"
    with tempfile.TemporaryDirectory(prefix="relay-bench-sdk-") as tmp:
        folder = Path(tmp)
        (folder / "package.json").write_text('{"private": true}')
        packages = [f"{name}@{version}" for name, version in ANCHORS.items()]
        installed = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error", *packages],
                                   cwd=folder, capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:
            print(f"anchors left out: npm install failed: {installed.stderr.strip()[-300:]}", flush=True)
            return
        for name, source in ENTRIES.items():
            entry = folder / f"{name}.js"
            entry.write_text(source)
            out = folder / f"{name}.out.js"
            subprocess.run([str(esbuild), str(entry), "--bundle", "--minify", "--format=esm", "--log-level=error",
                            "--target=es2020", f"--outfile={out}"], cwd=folder, check=True)
            result(f"anchor.{name}.min_gzip", gz(out.read_bytes()) / KB, "KB")
        recorder = folder / "node_modules" / "posthog-js" / "dist" / "posthog-recorder.js"
        if recorder.exists():  # posthog's lazily loaded rrweb recorder, as it ships it (already minified)
            result("anchor.posthog_recorder.min_gzip", gz(recorder.read_bytes()) / KB, "KB")


def main() -> None:
    build()
    ours()
    anchors()


if __name__ == "__main__":
    main()
