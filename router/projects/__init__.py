"""Projects, their API keys and their members: the changes that touch both planes."""
