"""Exporting an asset's history as CSV or Parquet, streamed: the store is read a page at a time
(keyset pagination on the readings' time), so an export of any length holds one page in memory.
A Parquet export is written one row group per page, and its bytes are sent as each row group is
done (the format is written front to back, its footer last)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fogline.domain.assets import AssetType, DType
from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.timeseries import iso_from_ms
from fogline.ingest.validation import decode_value
from fogline.store.assets import AssetStore
from fogline.store.telemetry import StoredReading, TelemetryStore

if TYPE_CHECKING:
    import pyarrow as pa

EXPORT_PAGE_ROWS = 5_000
CSV_MEDIA_TYPE = "text/csv; charset=utf-8"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"


@dataclass(frozen=True)
class HistoryExport:
    """What one export reads: checked before the first byte is sent, so a bad request is
    answered as an error rather than as a broken download."""

    tenant: str
    asset: str
    columns: tuple[tuple[str, DType], ...]  # telemetry name and dtype, in column order
    start: int
    end: int


class HistoryExporter:
    def __init__(
        self, assets: AssetStore, store: TelemetryStore, page_rows: int = EXPORT_PAGE_ROWS
    ) -> None:
        self.assets = assets
        self.store = store
        self.page_rows = page_rows

    async def plan(
        self, tenant: str, asset_id: str, keys: Sequence[str], start: int, end: int
    ) -> HistoryExport:
        """The export of `keys` (every telemetry of the asset type when empty), with every
        problem of the request at once."""
        problems: list[Problem] = []
        if end <= start:
            problems.append(Problem("to", "must be after 'from'"))
        asset = await asyncio.to_thread(self.assets.get_asset, tenant, asset_id)
        asset_type: AssetType = await asyncio.to_thread(
            self.assets.get_asset_type, tenant, asset.asset_type
        )
        names = list(dict.fromkeys(keys)) or [d.name for d in asset_type.telemetry]
        columns = []
        for name in names:
            definition = asset_type.definition(name)
            if definition is None:
                reason = f"asset type {asset_type.id!r} defines no {name!r}"
                problems.append(Problem("keys", reason))
            else:
                columns.append((name, definition.dtype))
        if problems:
            raise InvalidInput.of(problems, "export")
        return HistoryExport(tenant, asset_id, tuple(columns), start, end)

    async def pages(self, export: HistoryExport) -> AsyncIterator[list[StoredReading]]:
        """The readings of the export, a page at a time, oldest first."""
        after: int | None = None
        while True:
            page = await asyncio.to_thread(
                self.store.readings_page,
                export.tenant,
                export.asset,
                export.start,
                export.end,
                after,
                self.page_rows,
            )
            if page:
                yield page
            if len(page) < self.page_rows:
                return
            after = page[-1].ts

    async def csv(self, export: HistoryExport) -> AsyncIterator[bytes]:
        """The export as CSV: a header, then one line per reading that holds any of the
        columns; each chunk is one page."""
        yield _csv_line(["ts", "time", *(name for name, _ in export.columns)], quote=False)
        async for page in self.pages(export):
            lines = [line for r in page if (line := _reading_line(export, r)) is not None]
            if lines:
                yield b"".join(lines)

    async def parquet(self, export: HistoryExport) -> AsyncIterator[bytes]:
        """The export as Parquet: `ts` (timestamp, ms, UTC), `asset`, then one typed column per
        telemetry (float64, int64, bool, string; null where the reading does not hold it); one
        row per reading that holds any of the columns, one row group per page."""
        import pyarrow.parquet as pq  # imported when used: pyarrow takes a while to load

        schema = parquet_schema(export)
        sink = _Chunks()
        writer = pq.ParquetWriter(sink, schema, compression="zstd")
        try:
            async for page in self.pages(export):
                rows = [r for r in page if any(name in r.values for name, _ in export.columns)]
                if rows:
                    table = _parquet_table(schema, export, rows)
                    await asyncio.to_thread(writer.write_table, table)
                    if chunk := sink.take():
                        yield chunk
        finally:
            writer.close()  # the footer; after a broken-off download it goes nowhere
        yield sink.take()


_ARROW_TYPES = {
    DType.FLOAT: "float64",
    DType.INT: "int64",
    DType.BOOL: "bool_",
    DType.STRING: "string",
}


def parquet_schema(export: HistoryExport) -> pa.Schema:
    import pyarrow as pa

    fields = [
        pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
        pa.field("asset", pa.string(), nullable=False),
    ]
    fields += [pa.field(name, getattr(pa, _ARROW_TYPES[dtype])()) for name, dtype in export.columns]
    metadata = {
        "fogline.tenant": export.tenant,
        "fogline.asset": export.asset,
        "fogline.from": str(export.start),
        "fogline.to": str(export.end),
    }
    return pa.schema(fields, metadata=metadata)


def _parquet_table(
    schema: pa.Schema, export: HistoryExport, readings: Sequence[StoredReading]
) -> pa.Table:
    import pyarrow as pa

    arrays = [
        pa.array([r.ts for r in readings], schema.field("ts").type),
        pa.array([export.asset] * len(readings), pa.string()),
    ]
    for name, dtype in export.columns:
        values = [decode_value(dtype, r.values.get(name)) for r in readings]
        if dtype is DType.FLOAT:
            values = [v if v is None or math.isfinite(v) else None for v in values]
        arrays.append(pa.array(values, schema.field(name).type))
    return pa.Table.from_arrays(arrays, schema=schema)


class _Chunks:
    """A write-only file that keeps what was written until taken: what ParquetWriter writes,
    handed on a row group at a time."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def flush(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data, self._parts = b"".join(self._parts), []
        return data


def _reading_line(export: HistoryExport, reading: StoredReading) -> bytes | None:
    values = reading.values
    if not any(name in values for name, _ in export.columns):
        return None  # a reading of other telemetry only
    cells = [_cell(decode_value(dtype, values.get(name)), True) for name, dtype in export.columns]
    return f"{reading.ts},{iso_from_ms(reading.ts)},{','.join(cells)}\r\n".encode()


def _csv_line(cells: Sequence[Any], quote: bool = True) -> bytes:
    return (",".join(_cell(c, quote) for c in cells) + "\r\n").encode()


def _cell(value: Any, quote: bool) -> str:
    """A value as stored: numbers as they are, booleans as true/false (as in JSON), strings
    always quoted (a string "42" stays a string), and a value the reading does not hold empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    text = str(value)
    if not quote and not any(c in text for c in ',"\r\n'):
        return text
    return '"' + text.replace('"', '""') + '"'
