"""The project pages of the dashboard, rendered by the cell that holds the project's data."""
