"""The HTTP API (`/api/v1`): thin FastAPI routers over the contexts."""
