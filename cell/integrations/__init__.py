"""The integrations area of the cell."""
