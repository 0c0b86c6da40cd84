"""`fogline library`: the ready-made models shipped with Fogline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from fogline.cli.context import ctx_of
from fogline.cli.inputs import key_value_pairs
from fogline.cli.next_steps import Advised
from fogline.cli.output import console, table
from fogline.client.http import ApiError
from fogline.domain.errors import ErrorKind, InvalidInput, Problem

app = typer.Typer(help="Ready-made models shipped with Fogline.", no_args_is_help=True)


@app.command("ls")
def library_ls(ctx: typer.Context) -> None:
    """The models in the library."""
    c = ctx_of(ctx)
    rows = c.client().get("/library")
    c.show(rows, lambda: table(rows, ["name", "version", "trigger", "summary", "outputs"]))


@app.command("show")
def library_show(ctx: typer.Context, name: str) -> None:
    """One library model: what it reads and writes, and its parameters (defaults, bounds,
    what each trades)."""
    c = ctx_of(ctx)
    entry = c.client().get(f"/library/{name}")

    def human() -> None:
        console.print(f"[bold]{entry['name']}[/] {entry['version']}: {entry['summary']}")
        console.print(f"trigger  {entry['trigger']}", highlight=False)
        console.print(f"inputs   {', '.join(entry['inputs'])}", highlight=False)
        console.print(f"outputs  {', '.join(entry['outputs'])}", highlight=False)
        if entry.get("expects"):
            console.print(f"expects  {entry['expects']}", highlight=False)
        rows = [
            {
                "parameter": pname,
                "type": spec["type"],
                "default": spec["default"],
                "range": _range(spec),
                "what it trades": spec.get("description") or "",
            }
            for pname, spec in entry["parameters"].items()
        ]
        if not rows:
            console.print("no parameters")
            return
        table(rows, ["parameter", "type", "default", "range", "what it trades"])
        console.print(
            f"set them at import: fogline library import {entry['name']} "
            f"--param {rows[0]['parameter']}=VALUE",
            highlight=False,
        )

    c.show(entry, human)


def _range(spec: dict[str, Any]) -> str:
    if spec.get("enum"):
        return " | ".join(str(v) for v in spec["enum"])
    low, high = spec.get("minimum"), spec.get("maximum")
    if low is None and high is None:
        return ""
    return f"{'' if low is None else f'{low:g}'}..{'' if high is None else f'{high:g}'}"


@app.command("import")
def library_import(
    ctx: typer.Context,
    name: str,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param", help="NAME=VALUE, repeatable: a parameter's value (library show lists them)"
        ),
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(help="import as this version (to keep the same model with other values)"),
    ] = None,
) -> None:
    """Import a library model into the tenant as a draft (then map and deploy it)."""
    c = ctx_of(ctx)
    body: dict[str, Any] = {"parameters": key_value_pairs(param, "--param")}
    if version is not None:
        body["version"] = version
    try:
        created = c.client().post(f"/tenants/{c.t()}/library/{name}/import", body)
    except ApiError as exc:
        if exc.kind is ErrorKind.CONFLICT:
            raise Advised(
                exc,
                f"this version is in your tenant already: import it as another with "
                f"`fogline library import {name} --version X.Y.Z` (with your --param values)",
            ) from None
        raise
    c.show(
        created,
        lambda: console.print(
            f"model [bold]{created['name']}[/] {created['version']} imported ({created['state']}); "
            f"next: fogline model map {created['name']} {created['version']} --type TYPE"
        ),
    )


@app.command("evaluate")
def library_evaluate(
    ctx: typer.Context,
    series: Annotated[
        Path | None,
        typer.Option(
            "--series",
            help="your own labelled series, a CSV with the columns ts (epoch ms or ISO 8601), "
            "value, label (1 inside an anomaly window, 0 not): the detectors and the baseline "
            "are scored on it instead of the built-in sets",
        ),
    ] = None,
    cycle_s: Annotated[
        float,
        typer.Option(
            "--cycle-s",
            min=0.0,
            help="with --series: the signal's cycle in seconds (86400: daily), told to the "
            "detectors as a user would (robust period_s, forecast season, discord history)",
        ),
    ] = 0.0,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="with --series, repeatable: DETECTOR.NAME=VALUE for one detector "
            "(discord-anomaly.m=24), NAME=VALUE for every detector that has NAME",
        ),
    ] = None,
    tolerance: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="with --series: readings a window is widened by on each side, and the gap "
            "that still merges alarms into one episode (default: 1% of the readings, 1..30)",
        ),
    ] = None,
) -> None:
    """Measured quality of the library's models: each anomaly detector against a rolling
    z-score baseline on the same series (virtual fleet and GutenTAG series, or your own with
    --series), scored by episodes; the motor models' precision and recall on held-out
    virtual-fleet faults (not with --series). A report: exits 0 whether or not a detector
    beats the baseline."""
    from fogline.library.evaluate import evaluate_all, read_series, run_set, series_set

    c = ctx_of(ctx)
    if series is None and (cycle_s or param or tolerance is not None):
        raise InvalidInput.of(
            [Problem("--cycle-s/--param/--tolerance", "only with --series FILE.csv")], "options"
        )
    if series is not None:
        params = key_value_pairs(param, "--param")
        evaluation_set = series_set(read_series(series), cycle_s, params, tolerance)
        figures: dict[str, Any] = {"anomaly_detectors": [run_set(evaluation_set)]}
    else:
        figures = evaluate_all()

    def human() -> None:
        short = {
            "windows": "windows",
            "hit": "hit",
            "false_alarm_episodes": "false alarms",
            "alarm_episodes": "episodes",
            "median_delay": "delay",
            "nab_standard": "NAB",
            "alarm_precision": "precision",
        }
        columns = ["detector", *short.values(), "time in alarm"]
        for result in figures["anomaly_detectors"]:
            rows = [
                {
                    "detector": name,
                    **{short[k]: row[k] for k in short},
                    "time in alarm": f"{row['time_in_alarm']:.2%}",
                }
                for name, row in result["detectors"].items()
            ]
            table(rows, columns, title=result["description"])
            losers = [
                f"{name} ({row['vs_baseline']})"
                for name, row in result["detectors"].items()
                if not name.endswith("baseline") and row["vs_baseline"] != "beats baseline"
            ]
            if losers:
                console.print(
                    f"[bold]loses to the baseline[/] on {result['set']}: " + ", ".join(losers)
                )
            else:
                console.print(f"every detector beats the baseline on {result['set']}")
            for series, series_rows in result["series"].items():
                if len(result["series"]) == 1:
                    break  # the set's verdict is the series'
                lost = [
                    f"{name} ({row['vs_baseline']})"
                    for name, row in series_rows.items()
                    if not name.endswith("baseline") and row["vs_baseline"] != "beats baseline"
                ]
                if lost:
                    console.print(f"  on the series {series} alone: " + ", ".join(lost))
        console.print(
            "delay in readings from the window's start; windows widened by the set's tolerance; "
            "NAB standard profile, 100 = every window at its first reading, 0 = none found; "
            "false alarms include the parts of an episode outside the widened windows; time in "
            "alarm: share of the readings outside them that are alarms; precision: share of alarm "
            "readings inside them. The rolling-z baseline has no cycle, while the detectors are "
            "told it where the set has one; there the seasonal rolling-z baseline (a z-score "
            "per phase of the cycle) is shown too, judged against the plain one"
        )
        motors = figures.get("motor_models")
        if motors is None:
            return
        rows = [{"model": name, **values} for name, values in motors.items()]
        table(rows, ["model", "precision", "recall", "positives", "samples"], title="motor models")

    c.show(figures, human)
