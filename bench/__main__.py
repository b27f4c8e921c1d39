"""`make bench`: run every benchmark module in turn (or those named on the command line)."""

from __future__ import annotations

import importlib
import sys

MODULES = ["bench.router", "bench.enrichment", "bench.cell", "bench.sdk", "bench.keys", "bench.dashboard",
           "bench.capacity"]


def main() -> int:
    names = sys.argv[1:] or MODULES
    for name in names:
        module = importlib.import_module(name if name.startswith("bench.") else f"bench.{name}")
        print(f"== {module.__name__}", flush=True)
        module.main()
    return 0


raise SystemExit(main())
