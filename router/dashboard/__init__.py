"""The dashboard's control-plane pages (sign-in, sign-up, projects), the `/app/` gate, and the static files.

Pages of one project are not here: the router forwards them to the project's cell (`Proxy.page`), which
renders them from its own database (`cell/dashboard/`).
"""
