"""Who may do what: API keys and their scope."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from fogline.domain.errors import Forbidden

DEFAULT_TENANT = "default"  # made at first start; the CLI's tenant unless told otherwise


class Role(Enum):
    ADMIN = "admin"  # the platform operator: manages tenants, may act within any tenant
    TENANT = "tenant"  # bound to one tenant; sees nothing of any other


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str | None
    name: str
    role: Role
    created_at: int
    revoked_at: int | None = None

    def require_tenant(self, tenant: str) -> None:
        """Refuse any call that would reach outside the key's own tenant."""
        if self.role is Role.ADMIN:
            return
        if self.tenant != tenant:
            raise Forbidden(f"this API key belongs to another tenant than {tenant!r}")

    def require_admin(self) -> None:
        if self.role is not Role.ADMIN:
            raise Forbidden("this needs an admin API key")
