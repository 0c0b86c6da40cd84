"""The top-level commands: run the platform, its version, its state and refused telemetry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from fogline import __version__, aio
from fogline.cli import output
from fogline.cli.context import ctx_of
from fogline.cli.output import console, table
from fogline.cli.status_view import status_lines
from fogline.client.http import ApiError
from fogline.domain.errors import ErrorKind

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
        int | None, typer.Option(help="embedded NATS port [default: 14222]")
    ] = None,
    mqtt_port: Annotated[
        int | None, typer.Option(help="embedded MQTT port [default: 18830]")
    ] = None,
    mqtt_host: Annotated[
        str | None, typer.Option(help="embedded MQTT address [default: 127.0.0.1]")
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
        mqtt_host=mqtt_host,
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
    """The platform's state: whether it is ready and each part (broker, database, historian,
    models), the whole platform (an admin key) and the tenant's ingest counters. Exits 6 when
    it is not ready or a part does not answer, after printing all it could learn."""
    c = ctx_of(ctx)
    client = c.client()
    ready = _answer_or_problem(lambda: client.get("/ready"))
    system = _answer_or_problem(lambda: client.get("/system"))
    stats = _answer_or_problem(lambda: client.get(f"/tenants/{c.t()}/ingest/stats"))
    unavailable = ready.get("status") != "ready" or any(
        part.get("status") == 503 for part in (system, stats)
    )

    def human() -> None:
        for line in status_lines(ready, system, stats, c.t()):
            console.print(line, highlight=False, markup=False, soft_wrap=True)
        if ready.get("status") != "ready":
            output.errors.print(f"[bold red]not ready[/]: {ready.get('detail')}", highlight=False)
        for name, part in (("system", system), ("ingest stats", stats)):
            if part.get("status") == 503:
                output.errors.print(
                    f"[bold red]{name} unavailable[/]: {part.get('detail')}", highlight=False
                )

    c.show({"ready": ready, "system": system, "ingest": stats}, human)
    if unavailable:
        raise typer.Exit(output.EXIT_CODES[ErrorKind.UNAVAILABLE])


def _answer_or_problem(call: Callable[[], Any]) -> dict[str, Any]:
    """The API's answer, or its 503 problem (a part away: the rest is still worth showing).
    Any other error (a bad key, say) ends the command as usual."""
    try:
        answer: dict[str, Any] = call()
    except ApiError as exc:
        if exc.status != 503 or not isinstance(exc.body, dict):
            raise
        return exc.body
    return answer
