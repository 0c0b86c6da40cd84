"""A small HTTP client for Fogline's API, used by the CLI, the virtual fleet and benchmarks."""

from fogline.client.http import ApiError, FoglineClient, resolve_connection

__all__ = ["ApiError", "FoglineClient", "resolve_connection"]
