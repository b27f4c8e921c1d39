"""The flags area of the cell."""
