"""The chat area of the cell."""
