"""Errors of the store context."""

from __future__ import annotations

from fogline.domain.errors import ConfigurationError, Unavailable


class DatabaseUnavailable(Unavailable):
    """The database cannot be reached or opened."""


class DatabaseUrlInvalid(ConfigurationError):
    """The database URL names no database Fogline can use."""
