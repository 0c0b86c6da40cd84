"""The `fogline` command."""
