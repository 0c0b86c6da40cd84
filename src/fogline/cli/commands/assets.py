"""`fogline asset`: the assets of the tenant, each of an asset type."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fogline.cli.context import ctx_of
from fogline.cli.inputs import key_value_pairs
from fogline.cli.output import console, emit_json, table

app = typer.Typer(help="Assets.", no_args_is_help=True)


@app.command("create")
def asset_create(
    ctx: typer.Context,
    asset_id: Annotated[str, typer.Argument(metavar="ID")],
    asset_type: Annotated[str, typer.Option("--type", help="asset type id")],
    name: Annotated[str | None, typer.Option()] = None,
    site: Annotated[str | None, typer.Option()] = None,
    label: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    attr: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
    lat: Annotated[float | None, typer.Option(help="latitude")] = None,
    lon: Annotated[float | None, typer.Option(help="longitude")] = None,
) -> None:
    """Create an asset of an asset type."""
    c = ctx_of(ctx)
    body: dict[str, Any] = {
        "id": asset_id,
        "asset_type": asset_type,
        "name": name,
        "site": site,
        "labels": {k: str(v) for k, v in key_value_pairs(label, "label").items()},
        "attributes": key_value_pairs(attr, "attr"),
    }
    if lat is not None or lon is not None:
        body["location"] = {"latitude": lat, "longitude": lon}
    created = c.client().post(f"/tenants/{c.t()}/assets", body)
    c.show(created, lambda: console.print(f"asset [bold]{asset_id}[/] created"))


@app.command("ls")
def asset_ls(
    ctx: typer.Context, asset_type: Annotated[str | None, typer.Option("--type")] = None
) -> None:
    """List assets."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/assets", type=asset_type)
    c.show(rows, lambda: table(rows, ["id", "asset_type", "name", "site", "labels"]))


@app.command("show")
def asset_show(ctx: typer.Context, asset_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Show an asset, as JSON (the API's answer, every field: a document to read or pipe)."""
    c = ctx_of(ctx)
    emit_json(c.client().get(f"/tenants/{c.t()}/assets/{asset_id}"))


@app.command("rm")
def asset_rm(ctx: typer.Context, asset_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete an asset and its telemetry history."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/assets/{asset_id}")
    console.print(f"asset {asset_id} deleted")
