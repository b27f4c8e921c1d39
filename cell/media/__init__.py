"""The media area of the cell."""
