"""The surveys area of the cell."""
