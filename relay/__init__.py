"""The `relay` command: run the whole system (`relay dev`) or one piece of it, and operate it."""
