"""The replays area of the cell."""
