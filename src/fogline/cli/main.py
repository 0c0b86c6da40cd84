"""`fogline`: run the platform; manage tenants, assets, devices and telemetry through its API."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from fogline import __version__, aio
from fogline.cli import output
from fogline.cli.commands import (
    asset_types,
    assets,
    bench,
    devices,
    keys,
    library,
    models,
    telemetry,
    tenants,
)
from fogline.cli.context import Context, ctx_of
from fogline.cli.output import console, emit_json, table
from fogline.client.http import ApiError
from fogline.domain.errors import FoglineError

app = typer.Typer(
    name="fogline",
    help="Fogline: ML models on IoT fleets, from device telemetry to deployed models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(tenants.app, name="tenant")
app.add_typer(keys.app, name="key")
app.add_typer(asset_types.app, name="asset-type")
app.add_typer(assets.app, name="asset")
app.add_typer(devices.app, name="device")
app.add_typer(telemetry.app, name="telemetry")
app.add_typer(bench.app, name="bench")
app.add_typer(models.app, name="model")
app.add_typer(library.app, name="library")


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Fogline API URL [env: FOGLINE_URL]")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key [env: FOGLINE_API_KEY]", show_default=False)
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="tenant [env: FOGLINE_TENANT]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="data dir of a local platform [env: FOGLINE_DATA_DIR]")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    ctx.obj = Context(url, api_key, tenant, data_dir, as_json)


@app.command()
def version() -> None:
    """Print Fogline's version."""
    console.print(__version__)


# -- the platform ---------------------------------------------------------------------------------


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
        if ready.get("status") != "ready":
            output.errors.print(f"[bold red]not ready[/]: {ready.get('detail')}", highlight=False)

    c.show({"ready": ready, "system": system, "ingest": stats}, human)


GLOBAL_FLAGS = {"--json"}
GLOBAL_OPTIONS = {"--url", "--api-key", "--tenant", "--data-dir"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let global options stand anywhere (`fogline device ls --json`), as users type them."""
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in GLOBAL_FLAGS or (name in GLOBAL_OPTIONS and "=" in arg):
            hoisted.append(arg)
        elif arg in GLOBAL_OPTIONS and i + 1 < len(argv):
            hoisted += argv[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


def main() -> None:
    try:
        app(args=hoist_global_options(sys.argv[1:]), standalone_mode=False)
    except FoglineError as exc:
        sys.exit(output.fail(exc))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            output.errors.print(f"error: {exc}")
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    main()
