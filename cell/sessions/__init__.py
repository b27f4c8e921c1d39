"""The sessions area of the cell."""
