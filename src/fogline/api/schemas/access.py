"""Tenants and API keys."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from fogline.access.tenants import IssuedKey, NewTenant, Tenant
from fogline.api.schemas.common import Name, Out, Slug, Strict, Timestamp
from fogline.domain.access import ApiKey
from fogline.domain.timeseries import iso_from_ms


class TenantIn(Strict):
    id: Slug
    name: Name | None = None


class ApiKeyIn(Strict):
    name: str = Field(min_length=1, max_length=200)


class TenantOut(Out):
    id: str
    name: str

    @classmethod
    def of(cls, tenant: Tenant) -> TenantOut:
        return cls(id=tenant.id, name=tenant.name)


class ApiKeyOut(Out):
    """An API key as it is known, never its secret."""

    id: str
    tenant: str | None = Field(description="null for an admin key")
    name: str
    role: Literal["admin", "tenant"]
    created_at: Timestamp
    revoked: bool

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            tenant=key.tenant,
            name=key.name,
            role=key.role.value,
            created_at=iso_from_ms(key.created_at),
            revoked=key.revoked_at is not None,
        )


class IssuedKeyOut(Out):
    api_key: str = Field(description="the secret: shown this once, kept nowhere")
    key: ApiKeyOut

    @classmethod
    def of(cls, issued: IssuedKey) -> IssuedKeyOut:
        return cls(api_key=issued.secret, key=ApiKeyOut.of(issued.key))


class NewTenantOut(Out):
    """The tenant, and its first API key."""

    id: str
    name: str
    api_key: str = Field(description="the first key's secret: shown this once, kept nowhere")
    key: ApiKeyOut

    @classmethod
    def of(cls, new: NewTenant) -> NewTenantOut:
        return cls(
            id=new.tenant.id,
            name=new.tenant.name,
            api_key=new.first_key.secret,
            key=ApiKeyOut.of(new.first_key.key),
        )
