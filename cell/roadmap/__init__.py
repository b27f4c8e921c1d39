"""The roadmap area of the cell."""
