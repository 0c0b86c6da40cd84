"""Health and the platform's own state."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from fogline import __version__
from fogline.api.deps import ApiServices, api_key, services
from fogline.domain.access import ApiKey

router = APIRouter(tags=["system"])


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@router.get("/system")
async def system(
    _key: ApiKey = Depends(api_key), svc: ApiServices = Depends(services)
) -> dict[str, Any]:
    return {**svc.system_info(), "hot_store": await svc.hot_store()}
