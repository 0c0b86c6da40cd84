"""`fogline`: run the platform; manage tenants, assets, devices and telemetry through its API."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from fogline import __version__, aio
from fogline.cli import output
from fogline.cli.commands import asset_types, assets, devices, keys, tenants
from fogline.cli.context import Context, ctx_of
from fogline.cli.inputs import read_bytes, read_bytes_or_stdin
from fogline.cli.output import console, emit_json, table
from fogline.client.http import ApiError
from fogline.client.packaging import manifest_in, pack_directory
from fogline.domain.errors import FoglineError, InvalidInput, Problem, Unavailable

app = typer.Typer(
    name="fogline",
    help="Fogline: ML models on IoT fleets, from device telemetry to deployed models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
telemetry_app = typer.Typer(help="Send and read telemetry.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)
model_app = typer.Typer(help="Models: manifests, versions, lifecycle.", no_args_is_help=True)
app.add_typer(tenants.app, name="tenant")
app.add_typer(keys.app, name="key")
app.add_typer(asset_types.app, name="asset-type")
app.add_typer(assets.app, name="asset")
app.add_typer(devices.app, name="device")
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(bench_app, name="bench")
app.add_typer(model_app, name="model")
library_app = typer.Typer(help="Ready-made models shipped with Fogline.", no_args_is_help=True)
app.add_typer(library_app, name="library")


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


# -- telemetry ------------------------------------------------------------------------------------


@telemetry_app.command("send")
def telemetry_send(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="DEVICE")],
    file: Annotated[Path, typer.Argument(help="JSON file of readings, or - for stdin")],
) -> None:
    """Send telemetry over HTTP on a device's behalf."""
    c = ctx_of(ctx)
    payload = read_bytes_or_stdin(file)
    receipt = c.client().send_telemetry(c.t(), device_id, payload)

    def human() -> None:
        console.print(
            f"accepted {receipt['accepted_values']} value(s) (stream seq {receipt['stream_seq']})"
        )
        for r in receipt["rejected"]:
            console.print(f"  rejected: {r['reason']}")

    c.show(receipt, human)


@telemetry_app.command("latest")
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


@telemetry_app.command("history")
def telemetry_history(
    ctx: typer.Context,
    asset: str,
    keys: Annotated[str | None, typer.Option(help="comma-separated telemetry names")] = None,
    start: Annotated[str, typer.Option("--from", help="epoch ms, ISO 8601 or -15m")] = "-1h",
    end: Annotated[str, typer.Option("--to")] = "now",
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


@telemetry_app.command("live")
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


# -- models ---------------------------------------------------------------------------------------


@model_app.command("submit")
def model_submit(
    ctx: typer.Context,
    path: Annotated[
        Path,
        typer.Argument(help="a manifest (JSON or YAML; - for stdin), or a model directory"),
    ],
) -> None:
    """Submit a model; it becomes a draft. A directory is submitted with its manifest
    (fogline.yaml) and uploaded as the model's package, which the local runtime runs."""
    c = ctx_of(ctx)
    directory = path if str(path) != "-" and path.is_dir() else None
    if directory is not None:
        manifest = manifest_in(directory)
        if manifest is None:
            raise InvalidInput.of([Problem(str(path), "has no fogline.yaml manifest")], "model")
        payload = read_bytes(manifest)
    else:
        payload = read_bytes_or_stdin(path)
    kind = "application/json" if payload.lstrip()[:1] in (b"{", b"[") else "application/yaml"
    client = c.client()
    created = client.request(
        "POST", f"/tenants/{c.t()}/models", content=payload, headers={"Content-Type": kind}
    )
    if directory is not None:
        where = f"/tenants/{c.t()}/models/{created['name']}/{created['version']}/package"
        uploaded = client.request(
            "PUT",
            where,
            content=pack_directory(directory),
            headers={"Content-Type": "application/gzip"},
        )
        created["package"] = uploaded["files"]
    c.show(
        created,
        lambda: console.print(
            f"model [bold]{created['name']}[/] {created['version']} submitted ({created['state']})"
            + (f" with {len(created['package'])} package files" if "package" in created else "")
        ),
    )


@model_app.command("init")
def model_init(
    name: Annotated[str, typer.Argument(help="the model's name (a slug)")],
    directory: Annotated[
        Path | None, typer.Option("--dir", help="where to write it (default: ./NAME)")
    ] = None,
) -> None:
    """Write a model project (SDK model, manifest, test) ready to submit."""
    from fogline.domain.ids import require_slug
    from fogline.sdk.template import write_template

    require_slug(name, "name")
    target = directory or Path(name)
    try:
        written = write_template(target, name)
    except FileExistsError as exc:
        raise InvalidInput.of([Problem(str(exc), "already exists; not overwritten")]) from None
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"next: cd {target} && python -m pytest && fogline model submit .")


@model_app.command("map")
def model_map(
    ctx: typer.Context,
    name: str,
    version: str,
    asset_type: Annotated[
        list[str] | None, typer.Option("--type", help="map to every asset of this type")
    ] = None,
    asset: Annotated[list[str] | None, typer.Option("--asset", help="map to this asset")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="a JSON/YAML mappings body (renames too)")
    ] = None,
) -> None:
    """Map a model's inputs and outputs to telemetry of the same names (or as --file says)."""
    c = ctx_of(ctx)
    if file is not None:
        body = yaml.safe_load(read_bytes(file))
    else:
        body = {"assets": asset or [], "asset_types": asset_type or []}
    result = c.client().put(f"/tenants/{c.t()}/models/{name}/{version}/mappings", body)
    c.show(
        result,
        lambda: table(
            [{"asset": r["asset"], "via": r["via"], **r} for r in result["resolved"]],
            ["asset", "via", "inputs", "outputs"],
        ),
    )


def _follow(c: Any, name: str, version: str, until: set[str], timeout: float) -> dict[str, Any]:
    """Poll the model until it reaches one of `until` (a saga runs in the background)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        model: dict[str, Any] = c.client().get(f"/tenants/{c.t()}/models/{name}/{version}")
        if model["state"] in until or time.monotonic() > deadline:
            return model
        time.sleep(0.3)


def _lifecycle_command(
    ctx: typer.Context, action: str, name: str, version: str, wait: bool, timeout: float
) -> None:
    c = ctx_of(ctx)
    model = c.client().post(f"/tenants/{c.t()}/models/{name}/{version}/{action}")
    goal = {"deploy": "active", "stop": "stopped", "retire": "draft"}[action]
    if wait and model["state"] != goal:
        model = _follow(c, name, version, {goal, "draft"}, timeout)
        if model["state"] != goal:
            why = model["state_reason"] or "timed out"
            raise Unavailable(f"model {name} {version} is {model['state']}: {why}")
    c.show(model, lambda: console.print(f"model {name} {version}: {model['state']}"))


WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the saga to finish")]
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait at most")]


@model_app.command("deploy")
def model_deploy(
    ctx: typer.Context,
    name: str,
    version: str,
    wait: WaitOption = True,
    timeout: TimeoutOption = 180,
) -> None:
    """Deploy: provision, start, wait healthy, start the data companion, mark active."""
    _lifecycle_command(ctx, "deploy", name, version, wait, timeout)


@model_app.command("stop")
def model_stop(
    ctx: typer.Context,
    name: str,
    version: str,
    wait: WaitOption = True,
    timeout: TimeoutOption = 60,
) -> None:
    """Stop an active model (companion first, then the model)."""
    _lifecycle_command(ctx, "stop", name, version, wait, timeout)


@model_app.command("retire")
def model_retire(ctx: typer.Context, name: str, version: str) -> None:
    """Send a stopped model back to draft."""
    _lifecycle_command(ctx, "retire", name, version, False, 0)


@model_app.command("update")
def model_update(
    ctx: typer.Context,
    name: str,
    to: Annotated[str, typer.Option("--to", help="the version that takes over")],
    wait: WaitOption = True,
    timeout: TimeoutOption = 180,
) -> None:
    """Replace the active version of NAME by another; the old one runs until the new one is
    healthy, and keeps running if it fails."""
    c = ctx_of(ctx)
    model = c.client().post(f"/tenants/{c.t()}/models/{name}/update", {"to_version": to})
    if wait:
        model = _follow(c, name, to, {"active", "draft"}, timeout)
        if model["state"] != "active":
            raise Unavailable(f"update to {to} failed: {model['state_reason'] or 'timed out'}")
    c.show(model, lambda: console.print(f"model {name} {to}: {model['state']}"))


@model_app.command("status")
def model_status(ctx: typer.Context, name: str, version: str) -> None:
    """The deployment: saga steps, runtime, health, companion counters, stale requests."""
    c = ctx_of(ctx)
    status = c.client().get(f"/tenants/{c.t()}/models/{name}/{version}/deployment")

    def human() -> None:
        console.print(
            f"[bold]{name} {version}[/]: {status['state']} {status['state_reason'] or ''}"
        )
        if status["runtime"]:
            r = status["runtime"]
            console.print(
                f"runtime {r['kind']} pid={r['pid']} as {r['run_as']} {r['endpoint'] or ''}"
            )
        if status["companion"]:
            comp = status["companion"]
            console.print(
                f"companion: {len(comp['assets'])} assets, {comp['scored']} readings scored, "
                f"{comp['outputs']} outputs, {comp['failures']} failures, {comp['stale']} stale"
            )
        table(status["steps"][-12:], ["saga", "step", "status", "attempt", "detail"])

    c.show(status, human)


@model_app.command("ls")
def model_ls(ctx: typer.Context) -> None:
    """List models."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/models")
    c.show(rows, lambda: table(rows, ["name", "version", "state", "inputs", "outputs"]))


@model_app.command("show")
def model_show(ctx: typer.Context, name: str, version: str) -> None:
    """Show a model, its manifest (secrets masked) and state."""
    c = ctx_of(ctx)
    emit_json(c.client().get(f"/tenants/{c.t()}/models/{name}/{version}"))


@model_app.command("events")
def model_events(ctx: typer.Context, name: str, version: str) -> None:
    """A model's lifecycle events."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/models/{name}/{version}/events")
    c.show(rows, lambda: table(rows, ["at", "event", "from", "to", "reason"]))


@model_app.command("rm")
def model_rm(ctx: typer.Context, name: str, version: str) -> None:
    """Remove a draft model."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/models/{name}/{version}")
    console.print(f"model {name} {version} removed")


# -- library -------------------------------------------------------------------------------------


@library_app.command("ls")
def library_ls(ctx: typer.Context) -> None:
    """The models in the library."""
    c = ctx_of(ctx)
    rows = c.client().get("/library")
    c.show(rows, lambda: table(rows, ["name", "version", "trigger", "summary", "outputs"]))


@library_app.command("import")
def library_import(ctx: typer.Context, name: str) -> None:
    """Import a library model into the tenant as a draft (then map and deploy it)."""
    c = ctx_of(ctx)
    created = c.client().post(f"/tenants/{c.t()}/library/{name}/import")
    c.show(
        created,
        lambda: console.print(
            f"model [bold]{created['name']}[/] {created['version']} imported ({created['state']}); "
            f"next: fogline model map {created['name']} {created['version']} --type TYPE"
        ),
    )


@library_app.command("evaluate")
def library_evaluate(ctx: typer.Context) -> None:
    """Precision and recall of the library's models on held-out virtual-fleet faults."""
    from fogline.library.evaluate import evaluate_all

    c = ctx_of(ctx)
    figures = evaluate_all()
    rows = [{"model": name, **values} for name, values in figures.items()]
    c.show(figures, lambda: table(rows, ["model", "precision", "recall", "positives", "samples"]))


# -- benchmarks -----------------------------------------------------------------------------------


@bench_app.command("ingest")
def bench_ingest(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(help="MQTT clients, one per device")] = 20,
    duration: Annotated[float, typer.Option(help="seconds of load per phase")] = 30.0,
    batch: Annotated[int, typer.Option(help="readings per message")] = 10,
    rate: Annotated[
        float, typer.Option(help="readings/s to offer in total (0: as fast as possible)")
    ] = 0.0,
    processes: Annotated[int, typer.Option(help="publisher processes")] = 2,
) -> None:
    """Readings/s committed end to end against a running platform, latency publish to commit,
    and the raw MQTT-to-NATS rate of the same publishers for comparison."""
    from fogline.bench.ingest import IngestBenchConfig, run_ingest_bench

    c = ctx_of(ctx)
    client = c.client()
    report = run_ingest_bench(
        client,
        c.t(),
        IngestBenchConfig(
            devices=devices, duration_s=duration, batch=batch, rate=rate, processes=processes
        ),
    )
    c.show(report, lambda: report_print(report))


@bench_app.command("e2e")
def bench_e2e(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="readings/s in the latency phase")] = 5000.0,
    duration: Annotated[float, typer.Option(help="seconds of load per phase")] = 30.0,
    models: Annotated[int, typer.Option(help="models deployed at once (0: skip)")] = 50,
    fleet_rate: Annotated[
        float, typer.Option(help="readings/s shared by the models of the fleet phase")
    ] = 1000.0,
    devices: Annotated[int, typer.Option(help="MQTT clients, one per device")] = 10,
    batch: Annotated[int, typer.Option(help="assets per device (readings per message)")] = 10,
    processes: Annotated[int, typer.Option(help="publisher processes")] = 2,
) -> None:
    """Latency from a device's publish to the model's output committed (and to the input
    committed, the baseline), and many models fed at once with every reading scored."""
    from fogline.bench.e2e import E2eBenchConfig, run_e2e_bench

    c = ctx_of(ctx)
    config = E2eBenchConfig(
        rate=rate,
        duration_s=duration,
        models=models,
        fleet_rate=fleet_rate,
        devices=devices,
        batch=batch,
        processes=processes,
    )
    config.check()  # bad settings are refused before anything is asked of the platform
    report = run_e2e_bench(
        c.client(), c.t(), config, progress=lambda line: output.errors.print(line, highlight=False)
    )
    c.show(report, lambda: report_print(report))


def report_print(report: dict[str, Any]) -> None:
    for line in report.get("lines", []):
        console.print(line, highlight=False, soft_wrap=True)


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
