"""Telemetry history in SQL: integer series ids, one row per (series, timestamp)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple, Protocol

import orjson
from sqlalchemy import Engine, Float, Table, and_, case, cast, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from fogline.domain.retention import AGGREGATE_BUCKET_MS
from fogline.domain.telemetry import (
    DeadLetter,
    DeadLetterReason,
    DeviceActivity,
    DeviceStats,
    Reading,
    SourceKind,
    StoredDeadLetter,
)
from fogline.domain.timeseries import Bucket
from fogline.store import schema as s

SeriesKey = tuple[str, str]  # tenant, asset

_MODEL = SourceKind.MODEL
# Rows per upsert statement: 500 x 4 parameters stays far below SQLite's and PostgreSQL's limits.
UPSERT_CHUNK = 500


class ValueKind(Enum):
    """How a telemetry's JSON values aggregate: numbers, booleans (as 0/1), or text (count)."""

    NUMBER = "number"
    BOOL = "bool"
    TEXT = "text"


@dataclass(frozen=True)
class StreamOffset:
    """The last stream sequence committed, and which incarnation of the stream it counts in
    (a stream that was deleted and made again starts counting from 1)."""

    consumer: str
    stream_id: str
    last_seq: int


class AlreadyCommitted(Exception):
    """A batch's first stream message is at or below the offset the database holds: it (or
    part of it) was committed before, by a commit whose answer was lost or by an earlier run.
    Nothing of the batch was written; `stored` is what the database holds."""

    def __init__(self, stored: StreamOffset) -> None:
        super().__init__(f"stream messages up to {stored.last_seq} are already committed")
        self.stored = stored


@dataclass(frozen=True)
class StoredValue:
    ts: int
    value: Any


class StoredReading(NamedTuple):
    """One stored row of an asset's history: its time and every value reported at it."""

    ts: int
    values: dict[str, Any]


class TelemetryStore(Protocol):
    def commit_batch(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter],
        activity: Sequence[DeviceActivity],
        offset: StreamOffset | None,
        first_seq: int | None = None,
    ) -> None: ...
    def read_offset(self, consumer: str) -> StreamOffset | None: ...
    def check_writable(self) -> None: ...
    def latest(
        self, tenant: str, asset: str, names: Sequence[str], not_after: int | None = None
    ) -> dict[str, StoredValue]: ...
    def history(
        self, tenant: str, asset: str, names: Sequence[str], start: int, end: int, limit: int
    ) -> dict[str, list[StoredValue]]: ...
    def readings_page(
        self, tenant: str, asset: str, start: int, end: int, after: int | None, limit: int
    ) -> list[StoredReading]: ...
    def downsample(
        self,
        tenant: str,
        asset: str,
        kinds: dict[str, ValueKind],
        start: int,
        end: int,
        bucket_ms: int,
    ) -> dict[str, list[Bucket]]: ...
    def downsample_with_aggregates(
        self,
        tenant: str,
        asset: str,
        kinds: dict[str, ValueKind],
        start: int,
        end: int,
        bucket_ms: int,
    ) -> Downsampled: ...
    def dead_letters(
        self, tenant: str, device: str | None, since: int | None, limit: int
    ) -> list[StoredDeadLetter]: ...
    def dead_letter_counts(self, tenant: str, device: str | None = None) -> dict[str, int]: ...
    def device_stats(self, tenant: str) -> list[DeviceStats]: ...
    def count_readings(self, tenant: str, asset: str | None = None) -> int: ...
    def device_telemetry(self, tenant: str, assets: Sequence[str]) -> dict[str, set[str]]: ...


# Upserts into a table of another name.
_INTO = {"model_readings": "readings"}
# A latest value that takes the place of the stored one.
_NEWER = (
    "excluded.ts >= latest_values.ts "
    "AND (excluded.source = 'device' OR latest_values.source = 'model')"
)
# Per table: its columns, and what a row whose key is already there does.
_UPSERTS: dict[str, tuple[tuple[str, ...], str]] = {
    "readings": (
        ("series_id", "ts", "values_json"),
        "ON CONFLICT (series_id, ts) DO UPDATE SET values_json = {merge}",
    ),
    # A model's outputs: merged like a device's readings, except that no value of a telemetry
    # that a device writes on the asset is replaced (the historian refuses such outputs; this
    # holds even if one slipped past it).
    "model_readings": (
        ("series_id", "ts", "values_json"),
        "ON CONFLICT (series_id, ts) DO UPDATE SET values_json = {model_merge}",
    ),
    # The newer value wins, unless it is a model's and a device writes the telemetry; once a
    # device has written it, it stays a device's telemetry (even when that value was older).
    "latest_values": (
        ("series_id", "name", "ts", "value_json", "source"),
        "ON CONFLICT (series_id, name) DO UPDATE SET "
        f"ts = CASE WHEN {_NEWER} THEN excluded.ts ELSE latest_values.ts END, "
        f"value_json = CASE WHEN {_NEWER} THEN excluded.value_json "
        "ELSE latest_values.value_json END, "
        "source = CASE WHEN excluded.source = 'device' THEN 'device' "
        "ELSE latest_values.source END",
    ),
    "device_stats": (
        (
            "tenant_id",
            "device_id",
            "messages_total",
            "values_total",
            "dead_letters_total",
            "last_seen_ms",
        ),
        "ON CONFLICT (tenant_id, device_id) DO UPDATE SET "
        "messages_total = device_stats.messages_total + excluded.messages_total, "
        "values_total = device_stats.values_total + excluded.values_total, "
        "dead_letters_total = device_stats.dead_letters_total + excluded.dead_letters_total, "
        "last_seen_ms = {greatest}(device_stats.last_seen_ms, excluded.last_seen_ms)",
    ),
    "ingest_offsets": (
        ("consumer", "stream_id", "last_seq"),
        "ON CONFLICT (consumer) DO UPDATE SET "
        "stream_id = excluded.stream_id, last_seq = excluded.last_seq",
    ),
}


def _activity_rows(activity: Sequence[DeviceActivity]) -> list[tuple[Any, ...]]:
    """One row per device: an upsert may not touch the same row twice in one statement."""
    merged: dict[tuple[str, str], list[Any]] = {}
    for a in activity:
        row = merged.get((a.tenant, a.device))
        if row is None:
            merged[(a.tenant, a.device)] = [
                a.tenant,
                a.device,
                a.messages,
                a.values,
                a.dead_letters,
                a.last_seen_ms,
            ]
        else:
            row[2] += a.messages
            row[3] += a.values
            row[4] += a.dead_letters
            row[5] = max(row[5], a.last_seen_ms)
    return [tuple(row) for row in merged.values()]


def _merge_json(dialect: str, column: str) -> str:
    """SQL that merges a re-sent reading's values into the stored ones (same keys: same
    values, so a redelivery changes nothing; new keys: added)."""
    if dialect == "sqlite":
        return f"json_patch({column}, excluded.values_json)"
    return f"({column}::jsonb || excluded.values_json::jsonb)::text"


_DEVICE_NAMES = (
    "FROM latest_values d WHERE d.series_id = excluded.series_id AND d.source = 'device'"
)


def _merge_model_json(dialect: str, column: str) -> str:
    """As `_merge_json`, for a model's values: those of telemetry that a device writes on the
    asset are left out first, so a device's stored value is never replaced. (SQLite: a merge
    patch with null for a key removes it.)"""
    if dialect == "sqlite":
        strip = f"(SELECT json_group_object(d.name, NULL) {_DEVICE_NAMES})"
        return f"json_patch({column}, json_patch(excluded.values_json, {strip}))"
    strip = f"ARRAY(SELECT d.name::text {_DEVICE_NAMES})"
    return f"({column}::jsonb || (excluded.values_json::jsonb - {strip}))::text"


class SqlTelemetryStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # Series ids never change once made, so a process-wide cache is safe; it is filled only
        # after the transaction that made them commits.
        self._series: dict[SeriesKey, int] = {}
        self._mark = "?" if self.dialect == "sqlite" else "%s"
        self._statements: dict[tuple[str, int], str] = {}

    def _upsert_sql(self, table: str, count: int) -> str:
        """One multi-row upsert statement: a single SQL step for hundreds of rows, instead of a
        step (and a release of the GIL, and a round trip to PostgreSQL) per row. Plain SQL,
        made once per shape: building SQLAlchemy constructs per batch cost the historian more
        than the database's own work at low rates."""
        key = (table, count)
        sql = self._statements.get(key)
        if sql is not None:
            return sql
        columns, on_conflict = _UPSERTS[table]
        row = "(" + ", ".join([self._mark] * len(columns)) + ")"
        greatest = "max" if self.dialect == "sqlite" else "greatest"
        into = _INTO.get(table, table)
        sql = (
            f"INSERT INTO {into} ({', '.join(columns)}) VALUES {', '.join([row] * count)} "
            + on_conflict.format(
                merge=_merge_json(self.dialect, "readings.values_json"),
                model_merge=_merge_model_json(self.dialect, "readings.values_json"),
                greatest=greatest,
            )
        )
        self._statements[key] = sql
        return sql

    def _upsert_many(self, conn: Connection, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        for start in range(0, len(rows), UPSERT_CHUNK):
            chunk = rows[start : start + UPSERT_CHUNK]
            params = tuple(value for row in chunk for value in row)
            conn.exec_driver_sql(self._upsert_sql(table, len(chunk)), params)

    def _insert(self, table: Table) -> Any:
        module: Any = sqlite if self.dialect == "sqlite" else postgresql
        return module.insert(table)

    # -- writing --------------------------------------------------------------------------

    def commit_batch(
        self,
        readings: Sequence[Reading],
        dead_letters: Sequence[DeadLetter],
        activity: Sequence[DeviceActivity],
        offset: StreamOffset | None,
        first_seq: int | None = None,
    ) -> None:
        """Everything one historian batch produced, in one transaction, with the stream offset,
        so a crash either keeps all of it or none.

        With `first_seq` (the batch's first stream sequence), the offset the database holds is
        checked in the same transaction: if it already covers `first_seq`, the batch was
        committed before (a commit whose answer was lost, a second historian) and
        `AlreadyCommitted` is raised with nothing written, so no counter adds a message twice.
        """
        with self.engine.begin() as conn:
            if offset is not None and first_seq is not None:
                stored = self._locked_offset(conn, offset.consumer)
                if (
                    stored is not None
                    and stored.stream_id == offset.stream_id
                    and stored.last_seq >= first_seq
                ):
                    raise AlreadyCommitted(stored)
            new_series = self._resolve_series(conn, {(r.tenant, r.asset) for r in readings})
            ids = self._series | new_series
            rows = _rows(readings, ids)
            self._upsert_many(conn, "readings", rows.devices)
            # Before the latest values: what devices write is what they wrote before this batch
            # (the historian has already kept a model from a device's values of this batch).
            self._upsert_many(conn, "model_readings", rows.models)
            self._upsert_many(conn, "latest_values", rows.latest)
            if dead_letters:
                conn.execute(insert(s.dead_letters), [_dead_letter_row(d) for d in dead_letters])
            self._upsert_many(conn, "device_stats", _activity_rows(activity))
            if offset is not None:
                row = (offset.consumer, offset.stream_id, offset.last_seq)
                self._upsert_many(conn, "ingest_offsets", [row])
        self._series.update(new_series)

    def _locked_offset(self, conn: Connection, consumer: str) -> StreamOffset | None:
        """The committed offset, locked until this transaction ends (PostgreSQL: FOR UPDATE;
        SQLite: a write after a stale read fails as busy), so two commits cannot both pass."""
        query = select(s.ingest_offsets).where(s.ingest_offsets.c.consumer == consumer)
        if self.dialect != "sqlite":
            query = query.with_for_update()
        row = conn.execute(query).first()
        return None if row is None else StreamOffset(consumer, row.stream_id, int(row.last_seq))

    def _resolve_series(self, conn: Connection, keys: Iterable[SeriesKey]) -> dict[SeriesKey, int]:
        missing = [k for k in keys if k not in self._series]
        if not missing:
            return {}
        series = s.telemetry_series
        conn.execute(
            self._insert(series).on_conflict_do_nothing(),
            [{"tenant_id": t, "asset_id": a} for t, a in missing],
        )
        found: dict[SeriesKey, int] = {}
        by_tenant: dict[str, set[str]] = {}
        for t, a in missing:
            by_tenant.setdefault(t, set()).add(a)
        for tenant, asset_ids in by_tenant.items():
            rows = conn.execute(
                select(series).where(series.c.tenant_id == tenant, series.c.asset_id.in_(asset_ids))
            )
            for r in rows:
                found[(r.tenant_id, r.asset_id)] = int(r.id)
        return found

    def check_writable(self) -> None:
        """Raises unless a write transaction can be had now: the database is up and not locked.
        It tells a database that is away from a batch that no database would take."""
        with self.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE ingest_offsets SET last_seq = last_seq WHERE 1 = 0")

    def read_offset(self, consumer: str) -> StreamOffset | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(s.ingest_offsets).where(s.ingest_offsets.c.consumer == consumer)
            ).first()
        if row is None:
            return None
        return StreamOffset(consumer, row.stream_id, int(row.last_seq))

    # -- reading --------------------------------------------------------------------------

    def _series_id(self, conn: Connection, tenant: str, asset: str) -> int | None:
        series = s.telemetry_series
        found = conn.execute(
            select(series.c.id).where(series.c.tenant_id == tenant, series.c.asset_id == asset)
        ).scalar_one_or_none()
        return None if found is None else int(found)

    def latest(
        self, tenant: str, asset: str, names: Sequence[str], not_after: int | None = None
    ) -> dict[str, StoredValue]:
        """The newest value of each telemetry (of `names`, or all), at or before `not_after`
        when given (the server's now: a reading from a device clock ahead of it is kept, but
        is not the latest until its time comes)."""
        lv = s.latest_values
        with self.engine.connect() as conn:
            sid = self._series_id(conn, tenant, asset)
            if sid is None:
                return {}
            query = select(lv.c.name, lv.c.ts, lv.c.value_json).where(lv.c.series_id == sid)
            if names:
                query = query.where(lv.c.name.in_(names))
            found = {
                r.name: StoredValue(int(r.ts), orjson.loads(r.value_json))
                for r in conn.execute(query)
            }
            ahead = {n for n, v in found.items() if not_after is not None and v.ts > not_after}
            if ahead and not_after is not None:
                for name in ahead:
                    del found[name]
                found.update(self._newest_until(conn, sid, ahead, not_after))
        return found

    def _newest_until(
        self, conn: Connection, sid: int, names: set[str], until: int
    ) -> dict[str, StoredValue]:
        """The newest stored value of each of `names` at or before `until`, read back from the
        readings (newest first, only as far as needed): `latest_values` holds a future value
        in their place. Rare: only telemetry whose newest reading is ahead of the clock."""
        r = s.readings
        found: dict[str, StoredValue] = {}
        rows = conn.execution_options(yield_per=500).execute(
            select(r.c.ts, r.c.values_json)
            .where(r.c.series_id == sid, r.c.ts <= until)
            .order_by(r.c.ts.desc())
        )
        for row in rows:
            for name, value in orjson.loads(row.values_json).items():
                if name in names and name not in found:
                    found[name] = StoredValue(int(row.ts), value)
            if len(found) == len(names):
                break
        rows.close()
        return found

    def history(
        self, tenant: str, asset: str, names: Sequence[str], start: int, end: int, limit: int
    ) -> dict[str, list[StoredValue]]:
        """Raw points per telemetry, oldest first, at most `limit` each."""
        r = s.readings
        wanted = set(names)
        result: dict[str, list[StoredValue]] = {n: [] for n in names}
        full: set[str] = set()
        with self.engine.connect() as conn:
            sid = self._series_id(conn, tenant, asset)
            if sid is None:
                return result
            rows = conn.execution_options(yield_per=2000).execute(
                select(r.c.ts, r.c.values_json)
                .where(r.c.series_id == sid, r.c.ts >= start, r.c.ts < end)
                .order_by(r.c.ts)
            )
            for row in rows:
                for name, value in orjson.loads(row.values_json).items():
                    if (wanted and name not in wanted) or name in full:
                        continue
                    points = result.setdefault(name, [])
                    points.append(StoredValue(int(row.ts), value))
                    if len(points) >= limit:
                        full.add(name)
                if wanted and len(full) == len(wanted):
                    break
            rows.close()
        return result

    def readings_page(
        self, tenant: str, asset: str, start: int, end: int, after: int | None, limit: int
    ) -> list[StoredReading]:
        """At most `limit` readings of [start, end), oldest first, after the reading at `after`
        when given: keyset pagination on the (series_id, ts) key, so each page is one index
        range scan however deep into the history it is, and a long export holds one page."""
        r = s.readings
        with self.engine.connect() as conn:
            sid = self._series_id(conn, tenant, asset)
            if sid is None:
                return []
            lower = r.c.ts >= start if after is None else r.c.ts > max(after, start - 1)
            rows = conn.execute(
                select(r.c.ts, r.c.values_json)
                .where(r.c.series_id == sid, lower, r.c.ts < end)
                .order_by(r.c.ts)
                .limit(limit)
            )
            return [StoredReading(int(row.ts), orjson.loads(row.values_json)) for row in rows]

    def _extract(self, name: str, kind: ValueKind) -> Any:
        column = s.readings.c.values_json
        if self.dialect == "sqlite":
            # json_extract gives numbers as numbers and true/false as 1/0.
            return func.json_extract(column, f"$.{name}")
        text = cast(column, JSONB)[name].astext
        if kind is ValueKind.BOOL:
            return case((text == "true", 1.0), (text == "false", 0.0))
        if kind is ValueKind.NUMBER:
            return cast(text, Float(53))
        return text

    def _bucket_columns(
        self, kinds: dict[str, ValueKind], bucket_ms: int, central: str
    ) -> tuple[Any, list[str], list[Any]]:
        """The bucket of each reading, and per telemetry (in name order) its count (`n<i>`) and,
        unless it is text, its `central` ("avg" or "sum": `<central><i>`), min and max."""
        r = s.readings
        bucket = (r.c.ts - r.c.ts % bucket_ms).label("bucket")
        names = sorted(kinds)
        columns: list[Any] = [bucket]
        for i, name in enumerate(names):
            value = self._extract(name, kinds[name])
            columns.append(func.count(value).label(f"n{i}"))
            if kinds[name] is not ValueKind.TEXT:
                columns += [
                    getattr(func, central)(value).label(f"{central}{i}"),
                    func.min(value).label(f"min{i}"),
                    func.max(value).label(f"max{i}"),
                ]
        return bucket, names, columns

    def downsample(
        self,
        tenant: str,
        asset: str,
        kinds: dict[str, ValueKind],
        start: int,
        end: int,
        bucket_ms: int,
    ) -> dict[str, list[Bucket]]:
        """avg/min/max/count per bucket and telemetry in one scan of the asset's readings.
        Text telemetry gets counts only."""
        r = s.readings
        bucket, names, columns = self._bucket_columns(kinds, bucket_ms, "avg")
        result: dict[str, list[Bucket]] = {n: [] for n in names}
        with self.engine.connect() as conn:
            sid = self._series_id(conn, tenant, asset)
            if sid is None or not names:
                return result
            rows = conn.execute(
                select(*columns)
                .where(r.c.series_id == sid, r.c.ts >= start, r.c.ts < end)
                .group_by(bucket)
                .order_by(bucket)
            )
            for row in rows:
                m = row._mapping
                for i, name in enumerate(names):
                    count = int(m[f"n{i}"])
                    if count == 0:
                        continue
                    numeric = kinds[name] is not ValueKind.TEXT
                    result[name].append(
                        Bucket(
                            start_ms=int(m["bucket"]),
                            avg=_float(m[f"avg{i}"]) if numeric else None,
                            min=_float(m[f"min{i}"]) if numeric else None,
                            max=_float(m[f"max{i}"]) if numeric else None,
                            count=count,
                        )
                    )
        return result

    def downsample_with_aggregates(
        self,
        tenant: str,
        asset: str,
        kinds: dict[str, ValueKind],
        start: int,
        end: int,
        bucket_ms: int,
    ) -> Downsampled:
        """Like `downsample`, with the hourly aggregates of expired readings added in when the
        buckets are whole hours (each reading is in one of the two, never both). An hourly
        aggregate counts where its hour begins: it is in the range when its hour begins in it."""
        names = sorted(kinds)
        parts: dict[str, dict[int, _Part]] = {n: {} for n in names}
        used: set[str] = set()
        with self.engine.connect() as conn:
            sid = self._series_id(conn, tenant, asset)
            if sid is None or not names:
                return Downsampled({n: [] for n in names}, False, False)
            if self._add_raw_parts(conn, sid, kinds, start, end, bucket_ms, parts):
                used.add("raw")
            if bucket_ms % AGGREGATE_BUCKET_MS == 0 and self._add_aggregate_parts(
                conn, sid, names, start, end, bucket_ms, parts
            ):
                used.add("aggregates")
        series = {
            name: [
                parts[name][b].bucket(b, kinds[name] is not ValueKind.TEXT)
                for b in sorted(parts[name])
            ]
            for name in names
        }
        return Downsampled(series, "raw" in used, "aggregates" in used)

    def _add_raw_parts(
        self,
        conn: Connection,
        sid: int,
        kinds: dict[str, ValueKind],
        start: int,
        end: int,
        bucket_ms: int,
        parts: dict[str, dict[int, _Part]],
    ) -> bool:
        r = s.readings
        bucket, names, columns = self._bucket_columns(kinds, bucket_ms, "sum")
        rows = conn.execute(
            select(*columns)
            .where(r.c.series_id == sid, r.c.ts >= start, r.c.ts < end)
            .group_by(bucket)
        )
        found = False
        for row in rows:
            m = row._mapping
            for i, name in enumerate(names):
                count = int(m[f"n{i}"])
                if count == 0:
                    continue
                found = True
                part = parts[name].setdefault(int(m["bucket"]), _Part())
                if kinds[name] is ValueKind.TEXT:
                    part.add(count, 0, 0.0, None, None)
                else:
                    total = _float(m[f"sum{i}"]) or 0.0
                    part.add(count, count, total, _float(m[f"min{i}"]), _float(m[f"max{i}"]))
        return found

    def _add_aggregate_parts(
        self,
        conn: Connection,
        sid: int,
        names: list[str],
        start: int,
        end: int,
        bucket_ms: int,
        parts: dict[str, dict[int, _Part]],
    ) -> bool:
        a = s.telemetry_aggregates
        bucket = (a.c.bucket_ts - a.c.bucket_ts % bucket_ms).label("bucket")
        rows = conn.execute(
            select(
                bucket,
                a.c.name,
                func.sum(a.c.value_count).label("n"),
                func.sum(a.c.numeric_count).label("numeric"),
                func.sum(a.c.value_sum).label("total"),
                func.min(a.c.value_min).label("low"),
                func.max(a.c.value_max).label("high"),
            )
            .where(
                a.c.series_id == sid,
                a.c.bucket_ts >= start,
                a.c.bucket_ts < end,
                a.c.name.in_(names),
            )
            .group_by(bucket, a.c.name)
        )
        found = False
        for row in rows:
            found = True
            parts[row.name].setdefault(int(row.bucket), _Part()).add(
                int(row.n),
                int(row.numeric),
                float(row.total),
                _float(row.low),
                _float(row.high),
            )
        return found

    def device_telemetry(self, tenant: str, assets: Sequence[str]) -> dict[str, set[str]]:
        """Per asset of `assets`: the telemetry that a device has ever written on it (assets
        with none are left out)."""
        series, lv = s.telemetry_series, s.latest_values
        found: dict[str, set[str]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(assets), UPSERT_CHUNK):
                query = (
                    select(series.c.asset_id, lv.c.name)
                    .select_from(lv.join(series, series.c.id == lv.c.series_id))
                    .where(
                        series.c.tenant_id == tenant,
                        series.c.asset_id.in_(assets[start : start + UPSERT_CHUNK]),
                        lv.c.source == SourceKind.DEVICE.value,
                    )
                )
                for row in conn.execute(query):
                    found.setdefault(row.asset_id, set()).add(row.name)
        return found

    def count_readings(self, tenant: str, asset: str | None = None) -> int:
        series = s.telemetry_series
        query = (
            select(func.count())
            .select_from(s.readings.join(series, series.c.id == s.readings.c.series_id))
            .where(series.c.tenant_id == tenant)
        )
        if asset is not None:
            query = query.where(series.c.asset_id == asset)
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

    def dead_letter_counts(self, tenant: str, device: str | None = None) -> dict[str, int]:
        """Per reason, of the tenant, or of one device (or model version's outputs)."""
        d = s.dead_letters
        query = select(d.c.reason_code, func.count().label("n")).where(d.c.tenant_id == tenant)
        if device is not None:
            query = query.where(d.c.device_id == device)
        query = query.group_by(d.c.reason_code)
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


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Downsampled:
    series: dict[str, list[Bucket]]
    from_raw: bool  # some buckets hold raw readings
    from_aggregates: bool  # some hold hourly aggregates of expired readings


@dataclass
class _Part:
    """One bucket of one telemetry, added up from raw readings and hourly aggregates."""

    count: int = 0
    numeric: int = 0
    total: float = 0.0
    low: float | None = None
    high: float | None = None

    def add(
        self, count: int, numeric: int, total: float, low: float | None, high: float | None
    ) -> None:
        self.count += count
        self.numeric += numeric
        self.total += total
        if low is not None:
            self.low = low if self.low is None else min(self.low, low)
        if high is not None:
            self.high = high if self.high is None else max(self.high, high)

    def bucket(self, start_ms: int, numeric: bool) -> Bucket:
        avg = self.total / self.numeric if numeric and self.numeric else None
        return Bucket(
            start_ms=start_ms,
            avg=avg,
            min=self.low if numeric else None,
            max=self.high if numeric else None,
            count=self.count,
        )


@dataclass
class _Rows:
    devices: list[tuple[int, int, str]]  # readings rows of devices' values
    models: list[tuple[int, int, str]]  # readings rows of models' values
    latest: list[tuple[int, str, int, str, str]]  # latest_values rows


def _rows(readings: Sequence[Reading], ids: dict[SeriesKey, int]) -> _Rows:
    """Rows for `readings` and `latest_values`. Readings of one asset and time are merged
    first (a key may not be upserted twice in one statement), and rows are sorted by key,
    which makes the B-tree inserts about three times faster than arrival order. The loops use
    dict.update, not per-value Python code: this runs for every reading the platform keeps.

    Devices' and models' values are merged apart: where both have a value of one telemetry at
    one time, the device's is kept. A telemetry that a device wrote in the batch is a device's
    in `latest_values`, with the device's newest value."""
    merged: dict[tuple[int, int], dict[str, Any]] = {}
    merged_models: dict[tuple[int, int], dict[str, Any]] = {}
    for r in readings:
        into = merged if r.source is not _MODEL else merged_models
        key = (ids[(r.tenant, r.asset)], r.ts)
        existing = into.get(key)
        into[key] = r.values if existing is None else {**existing, **r.values}
    dumps = orjson.dumps
    devices = sorted(merged.items())
    models = []
    for key, values in sorted(merged_models.items()):
        device_values = merged.get(key)
        if device_values is not None:
            values = {n: v for n, v in values.items() if n not in device_values}
        if values:
            models.append((key, values))
    latest: dict[tuple[int, str], tuple[int, Any, str]] = {}
    for source, ordered in (("model", models), ("device", devices)):
        newest_value: dict[int, dict[str, Any]] = {}
        newest_ts: dict[int, dict[str, int]] = {}
        for (sid, ts), values in ordered:  # oldest first, so later readings win
            if sid in newest_value:
                newest_value[sid].update(values)
                newest_ts[sid].update(dict.fromkeys(values, ts))
            else:
                newest_value[sid] = dict(values)
                newest_ts[sid] = dict.fromkeys(values, ts)
        for sid, values in newest_value.items():  # devices' last: theirs take the place
            for name, value in values.items():
                latest[(sid, name)] = (newest_ts[sid][name], value, source)
    return _Rows(
        [(sid, ts, dumps(values).decode()) for (sid, ts), values in devices],
        [(sid, ts, dumps(values).decode()) for (sid, ts), values in models],
        [
            (sid, name, ts, dumps(value).decode(), source)
            for (sid, name), (ts, value, source) in sorted(latest.items())
        ],
    )


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
