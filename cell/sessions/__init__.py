"""Sessions: one browser or app visit of an end user, with its device and counters."""
