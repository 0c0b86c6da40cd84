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
    """Precision and recall of the library's models on held-out virtual-fleet faults."""
    from fogline.library.evaluate import evaluate_all

    c = ctx_of(ctx)
    figures = evaluate_all()
    rows = [{"model": name, **values} for name, values in figures.items()]
    c.show(figures, lambda: table(rows, ["model", "precision", "recall", "positives", "samples"]))
