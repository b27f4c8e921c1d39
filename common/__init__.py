"""Code shared by the router and the cells: the wire contract both sides must agree on.

Nothing here imports `router` or `cell`; nothing here holds resources at run time.
"""
