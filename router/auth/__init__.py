"""Dashboard accounts: signup, login, sessions."""
