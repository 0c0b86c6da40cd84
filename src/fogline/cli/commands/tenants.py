"""`fogline tenant`: tenants, which only the admin key may create and list."""

from __future__ import annotations

from typing import Annotated

import typer

from fogline.cli.context import ctx_of
from fogline.cli.output import console, table

app = typer.Typer(help="Tenants (admin key).", no_args_is_help=True)


@app.command("create")
def tenant_create(
    ctx: typer.Context,
    tenant_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create a tenant; prints its first API key (shown once)."""
    c = ctx_of(ctx)
    created = c.client().post("/tenants", {"id": tenant_id, "name": name})
    c.show(
        created,
        lambda: console.print(
            f"tenant [bold]{created['id']}[/] created\nAPI key (shown once): {created['api_key']}"
        ),
    )


@app.command("ls")
def tenant_ls(ctx: typer.Context) -> None:
    """List tenants."""
    c = ctx_of(ctx)
    rows = c.client().get("/tenants")
    c.show(rows, lambda: table(rows, ["id", "name"]))
