"""The top-level commands: run the platform, its version, its state and refused telemetry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fogline import __version__, aio
from fogline.cli import output
from fogline.cli.context import ctx_of
from fogline.cli.output import console, emit_json, table
from fogline.client.http import ApiError
from fogline.domain.timeseries import iso_from_ms

# No name and no help of its own: main.py merges these commands into `fogline` itself.
app = typer.Typer()


@app.command()
def version() -> None:
    """Print Fogline's version."""
    console.print(__version__)


@app.command()
def up(
    ctx: typer.Context,
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
    http_host: Annotated[str | None, typer.Option(help="HTTP address")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port [default: 8470]")] = None,
    nats_port: Annotated[
        int | None, typer.Option(help="embedded NATS port [default: 42220]")
    ] = None,
    mqtt_port: Annotated[
        int | None, typer.Option(help="embedded MQTT port [default: 18830]")
    ] = None,
) -> None:
    """Start the platform in the foreground; Ctrl-C stops it."""
    from fogline.app.runner import serve
    from fogline.app.settings import load_settings
    from fogline.logs import configure

    settings = load_settings(
        config,
        data_dir=ctx_of(ctx).data_dir,
        http_host=http_host,
        http_port=http_port,
        nats_port=nats_port,
        mqtt_port=mqtt_port,
    )
    configure(settings.log_level)
    aio.run(serve(settings))


@app.command()
def demo(
    ctx: typer.Context,
    duration: Annotated[float, typer.Option(help="seconds the fleet publishes")] = 30.0,
    motors: Annotated[int, typer.Option(help="virtual induction motors")] = 20,
    keep_running: Annotated[
        bool, typer.Option(help="leave the platform up after the summary, until Ctrl-C")
    ] = False,
    demo_dir: Annotated[Path, typer.Option(help="data dir of the demo")] = Path(".fogline-demo"),
) -> None:
    """Start the platform with a virtual fleet of motors over real MQTT, show it live, and end
    with a summary."""
    from fogline.app.demo import run_demo
    from fogline.logs import configure

    configure("warning")
    aio.run(run_demo(demo_dir, duration, motors, keep_running))


@app.command("dead-letters")
def dead_letters(
    ctx: typer.Context,
    device: Annotated[str | None, typer.Option()] = None,
    since: Annotated[str | None, typer.Option(help="epoch ms, ISO 8601 or -15m")] = None,
    limit: Annotated[int, typer.Option()] = 50,
) -> None:
    """Telemetry that was refused, newest first, with the reason."""
    c = ctx_of(ctx)
    result = c.client().get(
        f"/tenants/{c.t()}/dead-letters", device=device, since=since, limit=limit
    )

    def human() -> None:
        console.print(f"{result['total']} dead letter(s): {result['by_reason']}")
        table(result["items"], ["received_at", "device", "reason_code", "reason"])

    c.show(result, human)


@app.command()
def status(ctx: typer.Context) -> None:
    """The platform's state, whether it is ready (NATS, database, historian, with the
    historian's failures and restarts), and the tenant's ingest counters."""
    c = ctx_of(ctx)
    try:
        ready = c.client().get("/ready")
    except ApiError as exc:
        if exc.status != 503:
            raise
        ready = exc.body  # not ready: the problem says why
    system = c.client().get("/system")
    stats = c.client().get(f"/tenants/{c.t()}/ingest/stats")

    def human() -> None:
        emit_json(
            {
                "ready": ready,
                "system": system,
                "ingest": {k: v for k, v in stats.items() if k != "devices"},
            }
        )
        retention = system.get("retention")
        if retention is not None:
            console.print(_retention_line(retention), highlight=False)
        if ready.get("status") != "ready":
            output.errors.print(f"[bold red]not ready[/]: {ready.get('detail')}", highlight=False)

    c.show({"ready": ready, "system": system, "ingest": stats}, human)


def _retention_line(stats: dict[str, Any]) -> str:
    """The history's retention job in a line: an admin key sees it in /system."""
    oldest = stats.get("oldest_reading_ms")
    last = stats.get("last_run_at_ms")
    return (
        f"retention: {stats['readings_deleted']} readings deleted in {stats['runs']} run(s), "
        f"last run {iso_from_ms(last) if last else 'not yet'}, oldest reading kept "
        f"{iso_from_ms(oldest) if oldest else 'none'}"
        + (f", last error: {stats['last_error']}" if stats.get("last_error") else "")
    )
