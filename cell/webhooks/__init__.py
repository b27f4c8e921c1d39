"""The webhooks area of the cell."""
