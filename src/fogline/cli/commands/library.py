"""`fogline library`: the ready-made models shipped with Fogline."""

from __future__ import annotations

import typer

from fogline.cli.context import ctx_of
from fogline.cli.output import console, table

app = typer.Typer(help="Ready-made models shipped with Fogline.", no_args_is_help=True)


@app.command("ls")
def library_ls(ctx: typer.Context) -> None:
    """The models in the library."""
    c = ctx_of(ctx)
    rows = c.client().get("/library")
    c.show(rows, lambda: table(rows, ["name", "version", "trigger", "summary", "outputs"]))


@app.command("import")
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


@app.command("evaluate")
def library_evaluate(ctx: typer.Context) -> None:
    """Measured quality of the library's models: each anomaly detector against a rolling
    z-score baseline on the same series (virtual fleet and GutenTAG series), scored by
    episodes; the motor models' precision and recall on held-out virtual-fleet faults. A
    report: exits 0 whether or not a detector beats the baseline."""
    from fogline.library.evaluate import BASELINE, evaluate_all

    c = ctx_of(ctx)
    figures = evaluate_all()

    def human() -> None:
        short = {
            "windows": "windows",
            "hit": "hit",
            "false_alarm_episodes": "false alarms",
            "alarm_episodes": "episodes",
            "median_delay": "delay",
            "nab_standard": "NAB",
        }
        columns = ["detector", *short.values()]
        for result in figures["anomaly_detectors"]:
            rows = [
                {"detector": name, **{short[k]: row[k] for k in short}}
                for name, row in result["detectors"].items()
            ]
            table(rows, columns, title=result["description"])
            losers = [
                f"{name} ({row['vs_baseline']})"
                for name, row in result["detectors"].items()
                if name != BASELINE and row["vs_baseline"] != "beats baseline"
            ]
            if losers:
                console.print(
                    f"[bold]loses to the baseline[/] on {result['set']}: " + ", ".join(losers)
                )
            else:
                console.print(f"every detector beats the baseline on {result['set']}")
            for series, series_rows in result["series"].items():
                lost = [
                    f"{name} ({row['vs_baseline']})"
                    for name, row in series_rows.items()
                    if name != BASELINE and row["vs_baseline"] != "beats baseline"
                ]
                if lost:
                    console.print(f"  on the series {series} alone: " + ", ".join(lost))
        console.print(
            "delay in readings from the window's start; windows widened by the set's tolerance; "
            "NAB standard profile, 100 = every window at its first reading, 0 = none found"
        )
        motors = figures["motor_models"]
        rows = [{"model": name, **values} for name, values in motors.items()]
        table(rows, ["model", "precision", "recall", "positives", "samples"], title="motor models")

    c.show(figures, human)
