"""Local stand-ins for the outside world (Linear, Jira, GitHub) that speak their documented wire formats.

Each fake is a real HTTP server on 127.0.0.1 in a thread of the test process:
Relay's workers call it over the network exactly as they would call the
provider, and the test reads back what arrived. Each module also builds the
provider's signed webhook deliveries, for the other direction.
"""
