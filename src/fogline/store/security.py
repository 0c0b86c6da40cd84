"""Counts of what nats-server refused (failed logins, denied publishes and subscriptions), per
user name and kind, in SQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from fogline.store import schema as s


@dataclass(frozen=True)
class SecurityCount:
    """Refusals of one kind for one user name: added to what is kept (`count`), the first
    and last times kept as the earliest and the latest."""

    username: str
    kind: str
    tenant: str  # '' when the name has none
    device: str | None  # the device the name is, when it is one
    count: int
    first_seen_ms: int
    last_seen_ms: int
    last_subject: str | None = None
    last_address: str | None = None


class SecurityStore(Protocol):
    def add_security_counts(self, counts: Sequence[SecurityCount]) -> None: ...
    def device_security_counts(self, tenant: str, device: str) -> list[SecurityCount]: ...
    def security_counts(
        self, tenant: str | None = None, limit: int = 1000
    ) -> list[SecurityCount]: ...
    def security_totals(self, tenant: str | None = None) -> dict[str, int]: ...
    def forget_security_device(self, tenant: str, device: str) -> None: ...
    def security_user_known(self, username: str) -> bool: ...
    def unknown_security_users(self) -> int: ...


def _count_of(row: Any) -> SecurityCount:
    m = row._mapping  # a Row is a tuple: `row.count` is tuple.count
    return SecurityCount(
        m["username"],
        m["kind"],
        m["tenant_id"],
        m["device_id"],
        int(m["count"]),
        int(m["first_seen_ms"]),
        int(m["last_seen_ms"]),
        m["last_subject"],
        m["last_address"],
    )


class SqlSecurityStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add_security_counts(self, counts: Sequence[SecurityCount]) -> None:
        if not counts:
            return
        t = s.security_events
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        smallest = func.least if dialect is postgresql else func.min
        largest = func.greatest if dialect is postgresql else func.max
        with self.engine.begin() as conn:
            for c in counts:
                stmt = dialect.insert(t).values(
                    username=c.username,
                    kind=c.kind,
                    tenant_id=c.tenant,
                    device_id=c.device,
                    count=c.count,
                    first_seen_ms=c.first_seen_ms,
                    last_seen_ms=c.last_seen_ms,
                    last_subject=c.last_subject,
                    last_address=c.last_address,
                )
                new = stmt.excluded
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=[t.c.username, t.c.kind],
                        set_={
                            "tenant_id": new.tenant_id,
                            "device_id": new.device_id,
                            "count": t.c["count"] + new["count"],
                            "first_seen_ms": smallest(t.c.first_seen_ms, new.first_seen_ms),
                            "last_seen_ms": largest(t.c.last_seen_ms, new.last_seen_ms),
                            "last_subject": func.coalesce(new.last_subject, t.c.last_subject),
                            "last_address": func.coalesce(new.last_address, t.c.last_address),
                        },
                    )
                )

    def device_security_counts(self, tenant: str, device: str) -> list[SecurityCount]:
        t = s.security_events
        query = (
            select(t)
            .where(t.c.tenant_id == tenant, t.c.device_id == device)
            .order_by(t.c.kind, t.c.username)
        )
        with self.engine.connect() as conn:
            return [_count_of(r) for r in conn.execute(query)]

    def security_counts(self, tenant: str | None = None, limit: int = 1000) -> list[SecurityCount]:
        """Every user's counts (of one tenant, or all), the most refused first."""
        t = s.security_events
        query = select(t).order_by(t.c["count"].desc(), t.c.username, t.c.kind).limit(limit)
        if tenant is not None:
            query = query.where(t.c.tenant_id == tenant)
        with self.engine.connect() as conn:
            return [_count_of(r) for r in conn.execute(query)]

    def security_totals(self, tenant: str | None = None) -> dict[str, int]:
        """Refusals per kind (of one tenant, or all)."""
        t = s.security_events
        query = select(t.c.kind, func.sum(t.c["count"])).group_by(t.c.kind)
        if tenant is not None:
            query = query.where(t.c.tenant_id == tenant)
        with self.engine.connect() as conn:
            return {kind: int(total) for kind, total in conn.execute(query)}

    def forget_security_device(self, tenant: str, device: str) -> None:
        """A deleted device's counts stay, under its user name: no device's any more."""
        t = s.security_events
        with self.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.tenant_id == tenant, t.c.device_id == device)
                .values(device_id=None)
            )

    def security_user_known(self, username: str) -> bool:
        """Whether this user name has counts already (of any kind)."""
        t = s.security_events
        with self.engine.connect() as conn:
            found = conn.execute(select(t.c.kind).where(t.c.username == username).limit(1))
            return found.first() is not None

    def unknown_security_users(self) -> int:
        """How many user names that are no device's have counts."""
        t = s.security_events
        query = select(func.count(func.distinct(t.c.username))).where(t.c.device_id.is_(None))
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
