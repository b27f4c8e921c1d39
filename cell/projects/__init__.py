"""Projects homed in this cell: provisioned by the router, idempotently."""
