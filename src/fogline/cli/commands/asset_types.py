"""`fogline asset-type`: what telemetry and attributes the assets of a type have."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from fogline.api.problems import field_problems
from fogline.api.schemas.registry import AssetTypeBody
from fogline.cli.context import ctx_of
from fogline.cli.inputs import read_document
from fogline.cli.output import console, emit_json, table
from fogline.domain.errors import InvalidInput, Problem
from fogline.domain.ids import slug_problem

app = typer.Typer(help="Asset types: telemetry definitions and attributes.", no_args_is_help=True)


@app.command("apply")
def type_apply(ctx: typer.Context, file: Path) -> None:
    """Create or replace an asset type from a JSON or YAML file (with an `id`)."""
    c = ctx_of(ctx)
    document = read_document(file)
    if not isinstance(document, dict) or "id" not in document:
        raise InvalidInput.of([Problem("id", "the file must be a mapping with an 'id'")])
    type_id = document.pop("id")
    if (bad_id := slug_problem(type_id, "id")) is not None:
        # The id goes in the URL: a bad one is named as the file has it, beside every problem
        # of the rest (the API's own schema, read here), in one answer.
        try:
            AssetTypeBody.model_validate(document)
        except ValidationError as exc:
            raise InvalidInput.of([bad_id, *field_problems(exc.errors())]) from None
        raise InvalidInput.of([bad_id])
    result = c.client().put(f"/tenants/{c.t()}/asset-types/{type_id}", document)
    c.show(result, lambda: console.print(f"asset type [bold]{type_id}[/] applied"))


@app.command("ls")
def type_ls(ctx: typer.Context) -> None:
    """List asset types."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/asset-types")
    view = [{**r, "telemetry": ", ".join(d["name"] for d in r["telemetry"])} for r in rows]
    c.show(rows, lambda: table(view, ["id", "name", "telemetry"]))


@app.command("show")
def type_show(ctx: typer.Context, type_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show an asset type, as JSON (the API's answer: its telemetry and attributes in full)."""
    c = ctx_of(ctx)
    emit_json(c.client().get(f"/tenants/{c.t()}/asset-types/{type_id}"))


@app.command("rm")
def type_rm(ctx: typer.Context, type_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete an asset type that no asset uses."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/asset-types/{type_id}")
    console.print(f"asset type {type_id} deleted")
