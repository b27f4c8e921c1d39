"""A project's team: members and their roles, and the invitations that make people members.

Adding someone by email never attaches an existing account directly: it sends
a one-time link (router/members/invitations.py) that the person accepts while
signed in with that address. Owners are changed only by owners, and a project
always keeps one.
"""
