"""Moves: a project from one region's cell to another, with its keys still working (driven by the router)."""
