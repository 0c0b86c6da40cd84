"""The composition root: settings, and the platform process that wires the contexts together."""
