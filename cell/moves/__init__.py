"""Moves (cell side): the internal endpoints a move between regions drives, on its source and its target."""
