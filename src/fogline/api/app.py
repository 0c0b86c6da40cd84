"""The FastAPI application."""

from __future__ import annotations

from fastapi import FastAPI

from fogline import __version__
from fogline.api import problems
from fogline.api.deps import ApiServices
from fogline.api.metrics import RequestFiguresMiddleware
from fogline.api.routes import events, models, registry, retention, system, telemetry, tenants

API_PREFIX = "/api/v1"


def create_app(services: ApiServices) -> FastAPI:
    app = FastAPI(
        title="Fogline",
        version=__version__,
        description="Telemetry, assets and devices of IoT fleets, and the models that serve them.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.services = services
    problems.install(app)
    # Looked up per request: the schema check builds the app without services.
    app.add_middleware(RequestFiguresMiddleware, figures=lambda: app.state.services.requests)
    for module in (system, tenants, registry, telemetry, retention, models, events):
        app.include_router(module.router, prefix=API_PREFIX)
    return app
