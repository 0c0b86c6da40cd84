"""`fogline telemetry`: send readings over HTTP, and read them back."""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from fogline.cli.context import ctx_of
from fogline.cli.inputs import read_bytes_or_stdin
from fogline.cli.output import console, errors, table
from fogline.domain.errors import InvalidInput, Problem

app = typer.Typer(help="Send and read telemetry.", no_args_is_help=True)


class ExportFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"


@app.command("send")
def telemetry_send(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    file: Annotated[Path, typer.Argument(help="JSON file of readings, or - for stdin")],
) -> None:
    """Send telemetry over HTTP on a device's behalf. Exits 2 when every value was refused
    (each with its reason); values refused beside accepted ones are listed, exit 0."""
    c = ctx_of(ctx)
    payload = read_bytes_or_stdin(file)
    receipt = c.client().send_telemetry(c.t(), device_id, payload)

    def human() -> None:
        console.print(
            f"accepted {receipt['accepted_values']} value(s) (stream seq {receipt['stream_seq']})"
        )
        for r in receipt["rejected"]:
            errors.print(f"  rejected: {r['reason']}", highlight=False, markup=False)

    c.show(receipt, human)
    if receipt["rejected"] and not receipt["accepted_values"]:
        raise typer.Exit(2)  # nothing of it was stored: a script must notice


@app.command("latest")
def telemetry_latest(
    ctx: typer.Context,
    asset: str,
    keys: Annotated[str | None, typer.Option(help="comma-separated telemetry names")] = None,
) -> None:
    """Latest value of each telemetry of an asset."""
    c = ctx_of(ctx)
    result = c.client().get(f"/tenants/{c.t()}/assets/{asset}/telemetry/latest", keys=keys)
    rows = [{"telemetry": k, **v} for k, v in result["values"].items()]
    c.show(result, lambda: table(rows, ["telemetry", "value", "time"], title=asset))


@app.command("history")
def telemetry_history(
    ctx: typer.Context,
    asset: str,
    keys: Annotated[str | None, typer.Option(help="comma-separated telemetry names")] = None,
    start: Annotated[
        str, typer.Option("--from", help="epoch ms, ISO 8601, now, -15m or +24h")
    ] = "-1h",
    end: Annotated[str, typer.Option("--to", help="epoch ms, ISO 8601, now, -15m or +24h")] = "now",
    bucket: Annotated[str | None, typer.Option(help="downsample: 10s, 1m, 1h")] = None,
    limit: Annotated[int, typer.Option(help="raw points per telemetry")] = 1000,
) -> None:
    """Telemetry history of an asset, raw or in buckets (avg/min/max/count)."""
    from fogline.domain.timeseries import iso_from_ms

    c = ctx_of(ctx)
    result = c.client().get(
        f"/tenants/{c.t()}/assets/{asset}/telemetry/history",
        keys=keys,
        **{"from": start, "to": end},
        bucket=bucket,
        limit=limit,
    )

    def human() -> None:
        for name, s in result["series"].items():
            if bucket:
                rows = [{**b, "time": iso_from_ms(b["ts"])} for b in s["buckets"]]
                table(rows, ["time", "avg", "min", "max", "count"], title=f"{name} ({s['unit']})")
            else:
                rows = [{"time": iso_from_ms(p[0]), "value": p[1]} for p in s["points"]]
                table(rows, ["time", "value"], title=f"{name} ({s['unit']})")

    c.show(result, human)


@app.command("export")
def telemetry_export(
    ctx: typer.Context,
    asset: str,
    keys: Annotated[
        str | None, typer.Option(help="comma-separated telemetry names (default: all)")
    ] = None,
    start: Annotated[
        str, typer.Option("--from", help="epoch ms, ISO 8601, now, -15m or +24h")
    ] = "-1h",
    end: Annotated[str, typer.Option("--to", help="epoch ms, ISO 8601, now, -15m or +24h")] = "now",
    out: Annotated[
        Path | None, typer.Option("--out", help="file to write (default: standard output)")
    ] = None,
    file_format: Annotated[
        ExportFormat, typer.Option("--format", help="csv, or parquet (needs --out)")
    ] = ExportFormat.CSV,
) -> None:
    """Export an asset's raw history as CSV (ts in epoch ms, time in ISO 8601 UTC, then one
    column per telemetry) or Parquet (ts as a UTC timestamp, asset, then one typed column per
    telemetry). Streamed: any length of history, written as it arrives."""
    if file_format is ExportFormat.PARQUET and out is None:
        raise InvalidInput.of(
            [Problem("--out", "Parquet is a binary file: give the file to write with --out")],
            "export",
        )
    if out is not None and not out.parent.is_dir():
        raise InvalidInput.of(
            [Problem("--out", f"the folder {out.parent} does not exist: make it first")],
            "export",
        )
    c = ctx_of(ctx)
    path = f"/tenants/{c.t()}/assets/{asset}/telemetry/export"
    params = {"keys": keys, "from": start, "to": end, "format": file_format.value}
    client = c.client()
    if out is None:
        client.download(path, sys.stdout.buffer, **params)
        sys.stdout.buffer.flush()
        return
    # Written beside the target and renamed when complete: a broken-off download never
    # leaves a file that looks whole.
    partial = out.with_name(f".{out.name}.partial")
    try:
        with partial.open("wb") as file:
            size = client.download(path, file, **params)
        partial.replace(out)
    finally:
        partial.unlink(missing_ok=True)
    console.print(f"exported {asset} to {out} ({size:,} bytes)", highlight=False)


@app.command("live")
def telemetry_live(
    ctx: typer.Context,
    asset: str,
    count: Annotated[int, typer.Option(help="stop after this many events (0: never)")] = 0,
) -> None:
    """Follow an asset's telemetry as it is committed (Server-Sent Events)."""
    c = ctx_of(ctx)
    seen = 0
    for event, data in c.client().live(c.t(), asset):
        if event != "readings":
            continue
        sys.stdout.write(data + "\n")
        sys.stdout.flush()
        seen += 1
        if count and seen >= count:
            return
