"""Exporting history: the store read a page at a time (keyset pagination on ts), on SQLite and
PostgreSQL alike, and an export's memory bounded by its page, not by its length."""

from __future__ import annotations

import csv
import io
import tracemalloc

import pytest

from fogline.domain.errors import InvalidInput, NotFound
from fogline.domain.timeseries import iso_from_ms
from fogline.ingest.export import HistoryExporter
from fogline.store.database import Database
from tests.integration.test_store_contract import T0, db, reading, seeded

__all__ = ["db"]  # the store contract's fixture: SQLite and PostgreSQL

BATCH = 5_000


def load(database: Database, count: int) -> None:
    """`count` readings one ms apart from T0, rpm numbering them; every third has a state."""
    store = seeded(database).telemetry
    for first in range(0, count, BATCH):
        batch = []
        for i in range(first, min(first + BATCH, count)):
            values: dict[str, object] = {"rpm": i, "temperature": i / 4}
            if i % 3 == 0:
                values["state"] = f'run "{i}", ok'
            batch.append(reading(T0 + i, **values))
        store.commit_batch(batch, [], [], None)


def test_readings_are_paged_by_time(db: Database) -> None:
    load(db, 25)
    store = db.telemetry
    seen: list[int] = []
    after = None
    pages = 0
    while True:
        page = store.readings_page("acme", "m1", T0 + 2, T0 + 23, after, 7)
        assert len(page) <= 7
        seen += [r.ts - T0 for r in page]
        pages += 1
        if len(page) < 7:
            break
        after = page[-1].ts
    assert seen == list(range(2, 23))
    assert pages == 4  # three full pages, then an empty one ends it
    assert store.readings_page("acme", "m1", T0, T0 + 100, T0 + 24, 7) == []
    assert store.readings_page("acme", "nope", T0, T0 + 100, None, 7) == []
    first = store.readings_page("acme", "m1", T0, T0 + 1, None, 7)
    assert first[0].values == {"rpm": 0, "temperature": 0.0, "state": 'run "0", ok'}


async def test_export_reads_in_pages_and_writes_every_reading_once(db: Database) -> None:
    load(db, 1_000)
    exporter = HistoryExporter(db.assets, db.telemetry, page_rows=64)
    plan = await exporter.plan("acme", "m1", ["rpm", "state"], T0, T0 + 1_000)
    page_sizes = [len(p) async for p in exporter.pages(plan)]
    assert max(page_sizes) == 64 and sum(page_sizes) == 1_000
    text = b"".join([chunk async for chunk in exporter.csv(plan)]).decode()
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["ts", "time", "rpm", "state"]
    assert [int(r[0]) for r in rows[1:]] == [T0 + i for i in range(1_000)]
    assert rows[1] == [str(T0), iso_from_ms(T0), "0", 'run "0", ok']
    assert rows[2][3] == ""  # no state in that reading
    # Strings are quoted, numbers are not: a reader can tell "42" from 42.
    assert text.splitlines()[1].endswith(',0,"run ""0"", ok"')


async def test_bad_exports_report_every_problem_at_once(db: Database) -> None:
    seeded(db)
    exporter = HistoryExporter(db.assets, db.telemetry)
    with pytest.raises(InvalidInput) as caught:
        await exporter.plan("acme", "m1", ["rpm", "nope", "vibe"], T0 + 10, T0)
    assert [(p.field, p.reason) for p in caught.value.problems] == [
        ("to", "must be after 'from'"),
        ("keys", "asset type 'motor' defines no 'nope'"),
        ("keys", "asset type 'motor' defines no 'vibe'"),
    ]
    with pytest.raises(NotFound):
        await exporter.plan("acme", "no-such-asset", [], T0, T0 + 1)


async def test_memory_of_an_export_does_not_grow_with_its_length(db: Database) -> None:
    """The same export over 20,000 and over 100,000 readings: five times the CSV, about the
    same peak memory (one page of 1,000 readings), and every reading once, in order."""
    count = 100_000
    load(db, count)
    exporter = HistoryExporter(db.assets, db.telemetry, page_rows=1_000)

    async def export(readings: int) -> tuple[int, int, int]:
        plan = await exporter.plan("acme", "m1", [], T0, T0 + readings)
        tracemalloc.start()
        try:
            lines, size, last_ts = 0, 0, -1
            async for chunk in exporter.csv(plan):
                size += len(chunk)
                for line in chunk.splitlines():
                    if line.startswith(b"ts,"):
                        continue  # the header
                    ts = int(line.split(b",", 1)[0])
                    assert ts > last_ts
                    last_ts = ts
                    lines += 1
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert lines == readings and last_ts == T0 + readings - 1
        return peak, size, lines

    await export(2_000)  # connections and caches made once, not counted below
    small_peak, small_size, _ = await export(20_000)
    peak, size, _ = await export(count)
    assert size > 4.5 * small_size
    assert peak < 1.5 * small_peak + 256 * 1024, (small_peak, peak, size)


async def test_parquet_export_round_trips_typed_values_a_row_group_per_page(db: Database) -> None:
    """What pyarrow reads back from a Parquet export is what was stored, each telemetry in its
    own type (float64, int64, bool, string), null where a reading does not hold it; each page
    of the store is one row group, sent as soon as it is written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 500
    store = seeded(db).telemetry
    stored = []
    for i in range(count):
        values: dict[str, object] = {"rpm": i * 1_000_003, "temperature": i / 7}
        if i % 3 == 0:
            values["state"] = f'run "{i}", ok'
        if i % 4 == 0:
            values["running"] = i % 8 == 0
        stored.append(reading(T0 + i, **values))
    store.commit_batch(stored, [], [], None)
    exporter = HistoryExporter(db.assets, db.telemetry, page_rows=128)
    plan = await exporter.plan("acme", "m1", [], T0, T0 + count)
    chunks = [chunk async for chunk in exporter.parquet(plan)]
    assert len(chunks) == 5  # four row groups as they were written, then the footer
    data = b"".join(chunks)
    parquet = pq.ParquetFile(pa.BufferReader(data))
    assert parquet.metadata.num_row_groups == 4
    assert parquet.metadata.num_rows == count
    table = parquet.read()
    names = [name for name, _ in plan.columns]
    assert table.column_names == ["ts", "asset", *names]
    assert table.schema.field("ts").type == pa.timestamp("ms", tz="UTC")
    types = {name: str(table.schema.field(name).type) for name in names}
    assert types == {"temperature": "double", "rpm": "int64", "running": "bool", "state": "string"}
    rows = table.to_pylist()
    assert [int(r["ts"].timestamp() * 1000) for r in rows] == [T0 + i for i in range(count)]
    assert {r["asset"] for r in rows} == {"m1"}
    for row, sent in zip(rows, stored, strict=True):
        assert {k: row[k] for k in names if row[k] is not None} == sent.values
    assert rows[1]["state"] is None and rows[1]["running"] is None
    assert parquet.schema_arrow.metadata[b"fogline.asset"] == b"m1"
