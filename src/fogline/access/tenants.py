"""Tenants and their API keys: what the API asks before it lets a call in, and what an admin
(or a tenant, for its own keys) manages."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fogline.domain.access import ApiKey, Role
from fogline.domain.errors import FoglineError, NotFound
from fogline.domain.ids import require_slug
from fogline.store.tenants import TenantStore


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str


@dataclass(frozen=True)
class IssuedKey:
    """A new API key, with the one and only copy of its secret."""

    key: ApiKey
    secret: str


@dataclass(frozen=True)
class NewTenant:
    tenant: Tenant
    first_key: IssuedKey


class AccessService:
    def __init__(self, store: TenantStore) -> None:
        self.store = store

    # -- who is calling, and where they may act -----------------------------------------------

    async def authenticate(self, presented: str) -> ApiKey:
        return await asyncio.to_thread(self.store.authenticate, presented)

    async def enter_tenant(self, key: ApiKey, tenant: str) -> str:
        """`tenant`, once `key` may act in it: a tenant key never learns anything of another
        tenant, not even whether it exists (so the key is checked before the tenant is)."""
        key.require_tenant(tenant)
        if not await asyncio.to_thread(self.store.tenant_exists, tenant):
            raise NotFound(f"tenant {tenant!r} does not exist")
        return tenant

    async def refusal(self, presented: str, tenant: str) -> FoglineError | None:
        """Why the key `presented` may no longer act in `tenant` (revoked, say), or None: for
        requests that outlive a moment, such as live streams."""
        try:
            key = await self.authenticate(presented)
            key.require_tenant(tenant)
        except FoglineError as exc:
            return exc
        return None

    # -- tenants ------------------------------------------------------------------------------

    async def create_tenant(self, key: ApiKey, tenant_id: str, name: str | None) -> NewTenant:
        """A tenant (admin keys only) and its first key."""
        key.require_admin()
        tenant = Tenant(require_slug(tenant_id, "id"), name or tenant_id)
        await asyncio.to_thread(self.store.create_tenant, tenant.id, tenant.name)
        first_key = await self.create_api_key(tenant.id, f"{tenant.id} first key")
        return NewTenant(tenant, first_key)

    async def visible_tenants(self, key: ApiKey) -> list[Tenant]:
        """Every tenant for an admin key; its own for a tenant key."""
        tenants = await asyncio.to_thread(self.store.list_tenants)
        return [
            Tenant(tid, name)
            for tid, name in tenants
            if key.role is Role.ADMIN or key.tenant == tid
        ]

    # -- API keys of a tenant -----------------------------------------------------------------

    async def create_api_key(self, tenant: str, name: str) -> IssuedKey:
        key, secret = await asyncio.to_thread(self.store.create_api_key, tenant, name, Role.TENANT)
        return IssuedKey(key, secret)

    async def api_keys(self, tenant: str) -> list[ApiKey]:
        return await asyncio.to_thread(self.store.list_api_keys, tenant)

    async def revoke_api_key(self, tenant: str, key_id: str) -> None:
        await asyncio.to_thread(self.store.revoke_api_key, key_id, tenant)
