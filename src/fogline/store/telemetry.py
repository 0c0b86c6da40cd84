"""Telemetry history in SQL: integer series ids, one row per (series, timestamp)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Engine, Table, and_, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from fogline.domain.telemetry import (
    DeadLetter,
    DeadLetterReason,
    DeviceActivity,
    DeviceStats,
    StoredDeadLetter,
    TelemetryValue,
)
from fogline.domain.timeseries import Bucket
from fogline.store import schema as s

SeriesKey = tuple[str, str, str]  # tenant, asset, telemetry name


@dataclass(frozen=True)
class StreamOffset:
    """The last stream sequence committed, and which incarnation of the stream it counts in
    (a stream that was deleted and made again starts counting from 1)."""

    consumer: str
    stream_id: str
    last_seq: int


@dataclass(frozen=True)
class StoredValue:
    ts: int
    num: float | None
    text: str | None


class TelemetryStore(Protocol):
    def commit_batch(
        self,
        values: Sequence[TelemetryValue],
        dead_letters: Sequence[DeadLetter],
        activity: Sequence[DeviceActivity],
        offset: StreamOffset | None,
    ) -> None: ...
    def read_offset(self, consumer: str) -> StreamOffset | None: ...
    def latest(self, tenant: str, asset: str, names: Sequence[str]) -> dict[str, StoredValue]: ...
    def history(
        self, tenant: str, asset: str, names: Sequence[str], start: int, end: int, limit: int
    ) -> dict[str, list[StoredValue]]: ...
    def downsample(
        self, tenant: str, asset: str, names: Sequence[str], start: int, end: int, bucket_ms: int
    ) -> dict[str, list[Bucket]]: ...
    def dead_letters(
        self, tenant: str, device: str | None, since: int | None, limit: int
    ) -> list[StoredDeadLetter]: ...
    def dead_letter_counts(self, tenant: str) -> dict[str, int]: ...
    def device_stats(self, tenant: str) -> list[DeviceStats]: ...
    def count_values(self, tenant: str, asset: str | None = None) -> int: ...


class SqlTelemetryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Series ids never change once made, so a process-wide cache is safe; it is filled only
        # after the transaction that made them commits.
        self._series: dict[SeriesKey, int] = {}
        placeholder = "?" if self.dialect == "sqlite" else "%s"
        values = ", ".join([placeholder] * 4)
        self._insert_readings = (
            f"INSERT OR IGNORE INTO readings (series_id, ts, num, str) VALUES ({values})"
            if self.dialect == "sqlite"
            else f"INSERT INTO readings (series_id, ts, num, str) VALUES ({values}) "
            "ON CONFLICT DO NOTHING"
        )

    def _insert(self, table: Table) -> Any:
        module: Any = sqlite if self.dialect == "sqlite" else postgresql
        return module.insert(table)

    # -- writing --------------------------------------------------------------------------

    def commit_batch(
        self,
        values: Sequence[TelemetryValue],
        dead_letters: Sequence[DeadLetter],
        activity: Sequence[DeviceActivity],
        offset: StreamOffset | None,
    ) -> None:
        """Everything one historian batch produced, in one transaction, with the stream offset,
        so a crash either keeps all of it or none."""
        with self.engine.begin() as conn:
            new_series = self._resolve_series(conn, {(v.tenant, v.asset, v.name) for v in values})
            ids = self._series | new_series
            if values:
                conn.exec_driver_sql(
                    self._insert_readings,
                    [(ids[(v.tenant, v.asset, v.name)], v.ts, v.num, v.text) for v in values],
                )
            if dead_letters:
                conn.execute(insert(s.dead_letters), [_dead_letter_row(d) for d in dead_letters])
            for a in activity:
                self._count_activity(conn, a)
            if offset is not None:
                stmt = self._insert(s.ingest_offsets).values(
                    consumer=offset.consumer, stream_id=offset.stream_id, last_seq=offset.last_seq
                )
                conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["consumer"],
                        set_={"stream_id": offset.stream_id, "last_seq": offset.last_seq},
                    )
                )
        self._series.update(new_series)

    def _resolve_series(self, conn: Connection, keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
        missing = [k for k in keys if k not in self._series]
        if not missing:
            return {}
        conn.execute(
            self._insert(s.series).on_conflict_do_nothing(),
            [{"tenant_id": t, "asset_id": a, "name": n} for t, a, n in missing],
        )
        found: dict[SeriesKey, int] = {}
        by_tenant: dict[str, set[str]] = {}
        for t, a, _ in missing:
            by_tenant.setdefault(t, set()).add(a)
        for tenant, asset_ids in by_tenant.items():
            rows = conn.execute(
                select(s.series).where(
                    s.series.c.tenant_id == tenant, s.series.c.asset_id.in_(asset_ids)
                )
            )
            for r in rows:
                found[(r.tenant_id, r.asset_id, r.name)] = int(r.id)
        return found

    def _count_activity(self, conn: Connection, a: DeviceActivity) -> None:
        table = s.device_stats
        stmt = self._insert(table).values(
            tenant_id=a.tenant,
            device_id=a.device,
            messages_total=a.messages,
            values_total=a.values,
            dead_letters_total=a.dead_letters,
            last_seen_ms=a.last_seen_ms,
        )
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["tenant_id", "device_id"],
                set_={
                    "messages_total": table.c.messages_total + stmt.excluded.messages_total,
                    "values_total": table.c.values_total + stmt.excluded.values_total,
                    "dead_letters_total": table.c.dead_letters_total
                    + stmt.excluded.dead_letters_total,
                    "last_seen_ms": func.max(table.c.last_seen_ms, stmt.excluded.last_seen_ms)
                    if self.dialect == "sqlite"
                    else func.greatest(table.c.last_seen_ms, stmt.excluded.last_seen_ms),
                },
            )
        )

    def read_offset(self, consumer: str) -> StreamOffset | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.ingest_offsets).where(s.ingest_offsets.c.consumer == consumer)
            ).first()
        if row is None:
            return None
        return StreamOffset(consumer, row.stream_id, int(row.last_seq))

    # -- reading --------------------------------------------------------------------------

    def _series_of(
        self, conn: Connection, tenant: str, asset: str, names: Sequence[str]
    ) -> dict[str, int]:
        query = select(s.series.c.id, s.series.c.name).where(
            s.series.c.tenant_id == tenant, s.series.c.asset_id == asset
        )
        if names:
            query = query.where(s.series.c.name.in_(names))
        return {r.name: int(r.id) for r in conn.execute(query)}

    def latest(self, tenant: str, asset: str, names: Sequence[str]) -> dict[str, StoredValue]:
        r = s.readings
        result: dict[str, StoredValue] = {}
        with self.engine.connect() as conn:
            for name, sid in self._series_of(conn, tenant, asset, names).items():
                row = conn.execute(
                    select(r.c.ts, r.c.num, r.c.str)
                    .where(r.c.series_id == sid)
                    .order_by(r.c.ts.desc())
                    .limit(1)
                ).first()
                if row is not None:
                    result[name] = StoredValue(int(row.ts), row.num, row.str)
        return result

    def history(
        self, tenant: str, asset: str, names: Sequence[str], start: int, end: int, limit: int
    ) -> dict[str, list[StoredValue]]:
        r = s.readings
        result: dict[str, list[StoredValue]] = {}
        with self.engine.connect() as conn:
            for name, sid in sorted(self._series_of(conn, tenant, asset, names).items()):
                rows = conn.execute(
                    select(r.c.ts, r.c.num, r.c.str)
                    .where(r.c.series_id == sid, r.c.ts >= start, r.c.ts < end)
                    .order_by(r.c.ts)
                    .limit(limit)
                )
                result[name] = [StoredValue(int(x.ts), x.num, x.str) for x in rows]
        return result

    def downsample(
        self, tenant: str, asset: str, names: Sequence[str], start: int, end: int, bucket_ms: int
    ) -> dict[str, list[Bucket]]:
        r = s.readings
        bucket = (r.c.ts - r.c.ts % bucket_ms).label("bucket")
        result: dict[str, list[Bucket]] = {}
        with self.engine.connect() as conn:
            for name, sid in sorted(self._series_of(conn, tenant, asset, names).items()):
                rows = conn.execute(
                    select(
                        bucket,
                        func.avg(r.c.num).label("avg"),
                        func.min(r.c.num).label("min"),
                        func.max(r.c.num).label("max"),
                        func.count().label("n"),
                    )
                    .where(r.c.series_id == sid, r.c.ts >= start, r.c.ts < end)
                    .group_by(bucket)
                    .order_by(bucket)
                )
                result[name] = [
                    Bucket(
                        start_ms=int(x.bucket),
                        avg=None if x.avg is None else float(x.avg),
                        min=None if x.min is None else float(x.min),
                        max=None if x.max is None else float(x.max),
                        count=int(x.n),
                    )
                    for x in rows
                ]
        return result

    def count_values(self, tenant: str, asset: str | None = None) -> int:
        query = (
            select(func.count())
            .select_from(s.readings.join(s.series, s.series.c.id == s.readings.c.series_id))
            .where(s.series.c.tenant_id == tenant)
        )
        if asset is not None:
            query = query.where(s.series.c.asset_id == asset)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def dead_letters(
        self, tenant: str, device: str | None, since: int | None, limit: int
    ) -> list[StoredDeadLetter]:
        d = s.dead_letters
        condition = d.c.tenant_id == tenant
        if device is not None:
            condition = and_(condition, d.c.device_id == device)
        if since is not None:
            condition = and_(condition, d.c.received_at >= since)
        query = select(d).where(condition).order_by(d.c.id.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [StoredDeadLetter(int(row.id), _dead_letter(row)) for row in conn.execute(query)]

    def dead_letter_counts(self, tenant: str) -> dict[str, int]:
        d = s.dead_letters
        query = (
            select(d.c.reason_code, func.count().label("n"))
            .where(d.c.tenant_id == tenant)
            .group_by(d.c.reason_code)
        )
        with self.engine.connect() as conn:
            return {row.reason_code: int(row.n) for row in conn.execute(query)}

    def device_stats(self, tenant: str) -> list[DeviceStats]:
        t = s.device_stats
        query = select(t).where(t.c.tenant_id == tenant).order_by(t.c.device_id)
        with self.engine.connect() as conn:
            return [
                DeviceStats(
                    tenant=row.tenant_id,
                    device=row.device_id,
                    messages_total=int(row.messages_total),
                    values_total=int(row.values_total),
                    dead_letters_total=int(row.dead_letters_total),
                    last_seen_ms=int(row.last_seen_ms),
                )
                for row in conn.execute(query)
            ]


def _dead_letter_row(d: DeadLetter) -> dict[str, Any]:
    return {
        "tenant_id": d.tenant,
        "device_id": d.device,
        "received_at": d.received_at,
        "stream_seq": d.stream_seq,
        "item": d.item,
        "asset_id": d.asset,
        "telemetry": d.telemetry,
        "reason_code": d.reason_code.value,
        "reason": d.reason,
        "payload": d.payload,
    }


def _dead_letter(row: Any) -> DeadLetter:
    return DeadLetter(
        tenant=row.tenant_id,
        device=row.device_id,
        received_at=int(row.received_at),
        reason_code=DeadLetterReason(row.reason_code),
        reason=row.reason,
        payload=row.payload,
        stream_seq=row.stream_seq,
        item=row.item,
        asset=row.asset_id,
        telemetry=row.telemetry,
    )
