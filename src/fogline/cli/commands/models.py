"""`fogline model`: submit models, map them to assets, and run their lifecycle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fogline.cli.context import Context, ctx_of
from fogline.cli.inputs import read_bytes, read_bytes_or_stdin, read_document
from fogline.cli.next_steps import mapping_needed
from fogline.cli.output import console, emit_json, errors, table
from fogline.client.http import ApiError
from fogline.client.packaging import manifest_in, pack_directory
from fogline.domain.errors import InvalidInput, Problem, Unavailable

app = typer.Typer(help="Models: manifests, versions, lifecycle.", no_args_is_help=True)


@app.command("submit")
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


@app.command("init")
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


@app.command("map")
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
        body = read_document(file)
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


def _follow(c: Context, name: str, version: str, until: set[str], timeout: float) -> dict[str, Any]:
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
    try:
        model = c.client().post(f"/tenants/{c.t()}/models/{name}/{version}/{action}")
    except ApiError as exc:
        raise mapping_needed(exc, name, version) from exc
    goal = {"deploy": "active", "stop": "stopped", "retire": "draft"}[action]
    if wait and model["state"] != goal:
        model = _follow(c, name, version, {goal, "draft"}, timeout)
        if model["state"] != goal:
            why = model["state_reason"] or "timed out"
            raise Unavailable(f"model {name} {version} is {model['state']}: {why}")
    c.show(model, lambda: console.print(f"model {name} {version}: {model['state']}"))


WaitOption = Annotated[bool, typer.Option("--wait/--no-wait", help="wait for the saga to finish")]
TimeoutOption = Annotated[float, typer.Option(help="seconds to wait at most")]


@app.command("deploy")
def model_deploy(
    ctx: typer.Context,
    name: str,
    version: str,
    wait: WaitOption = True,
    timeout: TimeoutOption = 180,
) -> None:
    """Deploy: provision, start, wait healthy, start the data companion, mark active."""
    _lifecycle_command(ctx, "deploy", name, version, wait, timeout)


@app.command("stop")
def model_stop(
    ctx: typer.Context,
    name: str,
    version: str,
    wait: WaitOption = True,
    timeout: TimeoutOption = 60,
) -> None:
    """Stop an active model (companion first, then the model)."""
    _lifecycle_command(ctx, "stop", name, version, wait, timeout)


@app.command("retire")
def model_retire(ctx: typer.Context, name: str, version: str) -> None:
    """Send a stopped model back to draft."""
    _lifecycle_command(ctx, "retire", name, version, False, 0)


@app.command("update")
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


@app.command("status")
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
        if status["health"]:
            h = status["health"]
            console.print(
                f"health: {h['last'] or '-'}; {h['restarts']} restarts "
                f"({h['restarts_in_window']} in the window)"
                + (f"; [yellow]degraded: {h['problem']}[/]" if h["problem"] else "")
            )
        if status["companion"]:
            show_companion(status["companion"])
        if status["dead_letters"]:
            lost = ", ".join(
                f"{reason} {c['readings']} readings ({c['records']} records)"
                for reason, c in sorted(status["dead_letters"].items())
            )
            console.print(f"dead letters (all time): {lost}")
        if status["outputs_refused_by_historian"]:
            refused = ", ".join(
                f"{reason} {n}"
                for reason, n in sorted(status["outputs_refused_by_historian"].items())
            )
            console.print(
                f"[yellow]outputs refused when stored (all time): {refused}[/] — see "
                f"`fogline dead-letters --device model:{name}@{version}`"
            )
        table(status["steps"][-12:], ["saga", "step", "status", "attempt", "detail"])
        if _in_trouble(status):
            console.print(f"the model's own output: `fogline model logs {name} {version}`")

    c.show(status, human)


def _in_trouble(status: dict[str, Any]) -> bool:
    """Whether the model failed or is failing: then its own output says why."""
    health, comp = status["health"] or {}, status["companion"] or {}
    failing = health.get("problem") or health.get("restarts") or comp.get("failures")
    refused = status["state"] in ("draft", "degraded") and status["state_reason"]
    return bool(failing or refused)


def show_companion(comp: dict[str, Any]) -> None:
    r = comp["readings"]
    oldest = r["oldest_queued_age_s"]
    stopped = f" (stopped: {comp['stopped']})" if comp.get("stopped") else ""
    console.print(
        f"companion{stopped}: {len(comp['assets'])} assets, concurrency {comp['concurrency']}"
    )
    lost = ", ".join(f"{k} {v}" for k, v in sorted(r["dead_lettered_by_reason"].items()))
    # With overlapping windows a reading is in several: still counted once here.
    once = " (each once, in however many windows)" if comp.get("windowing") else ""
    console.print(
        f"readings: {r['accepted']} accepted{once} = {r['scored']} scored + "
        f"{r['dead_lettered']} dead-lettered{f' ({lost})' if lost else ''} + "
        f"{r['queued']} queued + {r['in_flight']} in flight"
        + (f"; oldest queued {oldest:.1f} s" if oldest is not None else "")
    )
    windowing = comp.get("windowing")
    if windowing:
        console.print(
            f"event-time windows: {comp['windows']} sent holding "
            f"{comp.get('window_memberships', 0)} reading-window memberships, "
            f"{windowing['open_windows']} open, {comp.get('covered_windows', 0)} not sent "
            f"(no reading of their own); {comp['late']} readings late (allowedLateness "
            f"{windowing['allowed_lateness_ms']} ms, idleTimeout "
            f"{windowing['idle_timeout_ms']} ms), {comp.get('future', 0)} ahead of the clock"
        )
    console.print(
        f"calls: {comp['calls']} answered, {comp['failures']} failed, {comp['timeouts']} timed "
        f"out, {comp['busy']} refused as busy; {comp['outputs']} outputs written"
        + (
            f" ({comp['outputs_overwritten']} items replaced an earlier output at the same time)"
            if comp.get("outputs_overwritten")
            else ""
        )
        + (f"; last error: {comp['last_error']}" if comp["last_error"] else "")
    )


@app.command("logs")
def model_logs(
    ctx: typer.Context,
    name: str,
    version: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new lines until Ctrl-C")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", min=0, max=10_000, help="how many of the last lines")
    ] = 50,
) -> None:
    """The model process's own output (stdout and stderr), as the platform logged it: where
    its errors and tracebacks are. Works against a remote platform too."""
    c = ctx_of(ctx)
    if follow:
        for line in c.client().follow_model_log(c.t(), name, version, lines):
            if c.as_json:
                emit_json({"line": line}, compact=True)
            else:
                print(line, flush=True)
        return
    log = c.client().get(f"/tenants/{c.t()}/models/{name}/{version}/logs", lines=lines)

    def human() -> None:
        for line in log["lines"]:
            print(line)
        if not log["lines"]:
            # On stderr: a script reading the lines gets none, a person gets told so.
            errors.print(f"(model {name} {version} has printed nothing yet)", highlight=False)

    c.show(log, human)


BACKFILL_TIMEOUT_S = 3600.0  # a day of history through a slow model takes a while


@app.command("backfill")
def model_backfill(
    ctx: typer.Context,
    name: str,
    version: str,
    asset: Annotated[str, typer.Option("--asset", help="a mapped asset")],
    start: Annotated[str, typer.Option("--from", help="epoch ms, ISO 8601, now, -15m or +24h")],
    end: Annotated[str, typer.Option("--to", help="epoch ms, ISO 8601, now, -15m or +24h")] = "now",
    stateful_ok: Annotated[
        bool,
        typer.Option(
            "--stateful-ok",
            help="run a stateful model anyway: its live state learns the old readings, and "
            "the outputs are scored from its current state, not as they were live",
        ),
    ] = False,
) -> None:
    """Run a deployed model over an asset's stored history [from, to) as it would have run
    live, writing its outputs as telemetry at the readings' own times (at most a day)."""
    c = ctx_of(ctx)
    report = c.client().post(
        f"/tenants/{c.t()}/models/{name}/{version}/backfills",
        {"asset": asset, "from": start, "to": end, "stateful_ok": stateful_ok},
        timeout=BACKFILL_TIMEOUT_S,
    )

    def human() -> None:
        from fogline.domain.timeseries import iso_from_ms

        r = report
        console.print(
            f"{name} {version} over {asset} from {iso_from_ms(r['start'])} to "
            f"{iso_from_ms(r['end'])}: {r['readings_read']} readings read"
            + (f", {r['windows']} windows" if r["windows"] else "")
            + f", {r['calls']} calls, {r['scored']} scored, {r['outputs_written']} outputs written"
        )
        if r.get("outputs_overwritten"):
            console.print(
                f"warning: {r['outputs_overwritten']} output items were written at a time this "
                "backfill had written outputs at already, replacing them (the model places the "
                "outputs of several calls at one reading)"
            )
        lost = r["dead_lettered"] + r["refused_outputs"]
        if lost or r["incomplete"]:
            console.print(
                f"lost: {r['dead_lettered']} readings in failed calls, {r['refused_outputs']} "
                f"outputs refused, {r['incomplete']} readings held back as incomplete; see "
                f"`fogline model dead-letters {name} {version}`"
            )
        console.print(
            f"read them: `fogline telemetry history {asset} --from {r['start']} --to {r['end']}`"
        )

    c.show(report, human)


@app.command("dead-letters")
def model_dead_letters(
    ctx: typer.Context,
    name: str,
    version: str,
    limit: Annotated[int, typer.Option(help="at most this many, newest first")] = 50,
    before: Annotated[int | None, typer.Option(help="older than this id (paging)")] = None,
) -> None:
    """What the model lost: readings not scored, outputs not written, with the reason."""
    c = ctx_of(ctx)
    params: dict[str, Any] = {"limit": limit}
    if before is not None:
        params["before"] = before
    page = c.client().get(f"/tenants/{c.t()}/models/{name}/{version}/dead-letters", **params)

    def human() -> None:
        if not page["items"]:
            console.print(f"{name} {version}: no dead letters")
            return
        columns = ["id", "at", "reason_code", "detail_code", "readings", "asset", "ts", "reason"]
        table(page["items"], columns)
        if page["next_before"]:
            console.print(f"older: --before {page['next_before']}")

    c.show(page, human)


@app.command("ls")
def model_ls(ctx: typer.Context) -> None:
    """List models."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/models")
    c.show(rows, lambda: table(rows, ["name", "version", "state", "inputs", "outputs"]))


@app.command("show")
def model_show(ctx: typer.Context, name: str, version: str) -> None:
    """Show a model, its manifest (secrets masked) and state, as JSON (the API's answer)."""
    c = ctx_of(ctx)
    emit_json(c.client().get(f"/tenants/{c.t()}/models/{name}/{version}"))


@app.command("events")
def model_events(ctx: typer.Context, name: str, version: str) -> None:
    """A model's lifecycle events."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/models/{name}/{version}/events")
    c.show(rows, lambda: table(rows, ["at", "event", "from", "to", "reason"]))


@app.command("rm")
def model_rm(ctx: typer.Context, name: str, version: str) -> None:
    """Remove a draft model."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/models/{name}/{version}")
    console.print(f"model {name} {version} removed")
