"""Benchmarks: figures measured side by side in one run, each ending with `RESULT <name> <value> <unit>` lines."""
