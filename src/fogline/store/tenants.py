"""Tenants and their API keys in SQL."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any, Protocol

from sqlalchemy import Engine, Row, and_, insert, select, update
from sqlalchemy.engine import Connection

from fogline.domain.access import ApiKey, Role
from fogline.domain.errors import AlreadyExists, NotFound, Unauthenticated
from fogline.domain.timeseries import now_ms
from fogline.store import schema as s

API_KEY_PREFIX = "fgl"


class TenantStore(Protocol):
    """Tenants and the API keys that act for them (or for the whole platform)."""

    def create_tenant(self, tenant_id: str, name: str) -> None: ...
    def tenant_exists(self, tenant_id: str) -> bool: ...
    def list_tenants(self) -> list[tuple[str, str]]: ...
    def create_api_key(self, tenant: str | None, name: str, role: Role) -> tuple[ApiKey, str]: ...
    def authenticate(self, presented: str) -> ApiKey: ...
    def list_api_keys(self, tenant: str | None) -> list[ApiKey]: ...
    def revoke_api_key(self, key_id: str, tenant: str | None) -> None: ...


def require_tenant(conn: Connection, tenant_id: str) -> None:
    """Raises NotFound unless the tenant exists: what each tenant-scoped insert checks first."""
    if not conn.execute(select(s.tenants.c.id).where(s.tenants.c.id == tenant_id)).first():
        raise NotFound(f"tenant {tenant_id!r} does not exist")


def _hash_secret(secret: str) -> str:
    # API key secrets are 256 random bits: a fast hash is enough, no key stretching needed.
    return hashlib.sha256(secret.encode()).hexdigest()


class SqlTenantStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- tenants --------------------------------------------------------------------------

    def create_tenant(self, tenant_id: str, name: str) -> None:
        with self.engine.begin() as conn:
            if conn.execute(select(s.tenants.c.id).where(s.tenants.c.id == tenant_id)).first():
                raise AlreadyExists(f"tenant {tenant_id!r} already exists")
            conn.execute(insert(s.tenants).values(id=tenant_id, name=name, created_at=now_ms()))

    def tenant_exists(self, tenant_id: str) -> bool:
        with self.engine.connect() as conn:
            return bool(
                conn.execute(select(s.tenants.c.id).where(s.tenants.c.id == tenant_id)).first()
            )

    def list_tenants(self) -> list[tuple[str, str]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(s.tenants.c.id, s.tenants.c.name).order_by(s.tenants.c.id))
            return [(r.id, r.name) for r in rows]

    # -- API keys -------------------------------------------------------------------------

    def create_api_key(self, tenant: str | None, name: str, role: Role) -> tuple[ApiKey, str]:
        """A new key and the one and only copy of its secret, as `fgl_<id>_<secret>`."""
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        key = ApiKey(id=key_id, tenant=tenant, name=name, role=role, created_at=now_ms())
        with self.engine.begin() as conn:
            if tenant is not None:
                require_tenant(conn, tenant)
            conn.execute(
                insert(s.api_keys).values(
                    id=key_id,
                    tenant_id=tenant,
                    name=name,
                    role=role.value,
                    secret_hash=_hash_secret(secret),
                    created_at=key.created_at,
                )
            )
        return key, f"{API_KEY_PREFIX}_{key_id}_{secret}"

    def authenticate(self, presented: str) -> ApiKey:
        prefix, _, rest = presented.partition("_")
        key_id, _, secret = rest.partition("_")
        if prefix != API_KEY_PREFIX or not key_id or not secret:
            raise Unauthenticated("malformed API key")
        with self.engine.connect() as conn:
            row = conn.execute(select(s.api_keys).where(s.api_keys.c.id == key_id)).first()
        if row is None or not hmac.compare_digest(row.secret_hash, _hash_secret(secret)):
            raise Unauthenticated("unknown API key")
        if row.revoked_at is not None:
            raise Unauthenticated("this API key was revoked")
        return _api_key(row)

    def list_api_keys(self, tenant: str | None) -> list[ApiKey]:
        query = select(s.api_keys).order_by(s.api_keys.c.created_at)
        if tenant is not None:
            query = query.where(s.api_keys.c.tenant_id == tenant)
        with self.engine.connect() as conn:
            return [_api_key(r) for r in conn.execute(query)]

    def revoke_api_key(self, key_id: str, tenant: str | None) -> None:
        condition = s.api_keys.c.id == key_id
        if tenant is not None:
            condition = and_(condition, s.api_keys.c.tenant_id == tenant)
        with self.engine.begin() as conn:
            done = conn.execute(
                update(s.api_keys)
                .where(condition, s.api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now_ms())
            )
            if done.rowcount == 0:
                raise NotFound(f"no active API key {key_id!r}")


def _api_key(row: Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        tenant=row.tenant_id,
        name=row.name,
        role=Role(row.role),
        created_at=row.created_at,
        revoked_at=row.revoked_at,
    )
