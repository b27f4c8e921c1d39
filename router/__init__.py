"""The global router: one endpoint for every region, and the control plane."""
