"""The feedback area of the cell."""
