"""Ready-made models shipped with Fogline, importable in one command (`fogline library`)."""
