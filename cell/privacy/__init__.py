"""The privacy area of the cell."""
