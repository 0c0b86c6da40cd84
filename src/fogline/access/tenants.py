"""Tenants and their API keys: what the API asks before it lets a call in, and what an admin
(or a tenant, for its own keys) manages."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from fogline.domain.access import ApiKey, Role
from fogline.domain.errors import FoglineError, NotFound, Unauthenticated, Unavailable
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


log = logging.getLogger(__name__)

# A key verified this recently is taken without asking the database again...
KEY_FRESH_S = 30.0
# ...and while the database is away, one verified this recently still is, so that an admin
# can read /api/v1/system and /api/v1/ready during an outage (nobody can revoke a key then).
KEY_OUTAGE_GRACE_S = 600.0
KEY_CACHE_SIZE = 10_000


class VerifiedKeys:
    """API keys verified recently, keyed by the SHA-256 of the secret presented (the secret
    itself is never kept). Only keys the database accepted are held, so the cache cannot be
    filled with made-up keys; the oldest go first when it is full."""

    def __init__(
        self,
        fresh_s: float = KEY_FRESH_S,
        outage_grace_s: float = KEY_OUTAGE_GRACE_S,
        size: int = KEY_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fresh_s = fresh_s
        self.outage_grace_s = outage_grace_s
        self.size = size
        self.clock = clock
        self._keys: OrderedDict[str, tuple[ApiKey, float]] = OrderedDict()
        # Revoked here: a check that read the key just before its revocation must not put it
        # back (ids only, a few bytes each; revocation is for good).
        self._revoked: set[str] = set()

    @staticmethod
    def digest(presented: str) -> str:
        return hashlib.sha256(presented.encode()).hexdigest()

    def get(self, digest: str, max_age_s: float) -> ApiKey | None:
        found = self._keys.get(digest)
        if found is None or self.clock() - found[1] > max_age_s:
            return None
        return found[0]

    def remember(self, digest: str, key: ApiKey) -> None:
        if key.id in self._revoked or key.revoked_at is not None:
            return
        self._keys.pop(digest, None)
        self._keys[digest] = (key, self.clock())
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)

    def forget(self, digest: str) -> None:
        self._keys.pop(digest, None)

    def forget_key(self, key_id: str) -> None:
        """Every entry of this key: it was revoked, and no request may pass with it from now."""
        self._revoked.add(key_id)
        for digest in [d for d, (key, _at) in self._keys.items() if key.id == key_id]:
            del self._keys[digest]


class AccessService:
    def __init__(self, store: TenantStore, verified: VerifiedKeys | None = None) -> None:
        self.store = store
        self.verified = verified or VerifiedKeys()

    # -- who is calling, and where they may act -----------------------------------------------

    async def authenticate(self, presented: str) -> ApiKey:
        """The key `presented`: from the cache of keys verified in the last seconds, or from
        the database; while the database is away, a key verified before the outage (within a
        grace) still passes, and any other is refused with `Unavailable`."""
        digest = self.verified.digest(presented)
        key = self.verified.get(digest, self.verified.fresh_s)
        if key is not None:
            return key
        try:
            key = await asyncio.to_thread(self.store.authenticate, presented)
        except Unauthenticated:
            self.verified.forget(digest)
            raise
        except Unavailable:
            key = self.verified.get(digest, self.verified.outage_grace_s)
            if key is None:
                raise
            log.debug("access.key_from_cache", extra={"fields": {"key_id": key.id}})
            return key
        self.verified.remember(digest, key)
        return key

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
        self.verified.forget_key(key_id)
