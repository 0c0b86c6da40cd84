"""`fogline key`: the API keys of the current tenant."""

from __future__ import annotations

from typing import Annotated

import typer

from fogline.cli.context import ctx_of
from fogline.cli.output import console, table

app = typer.Typer(help="API keys of a tenant.", no_args_is_help=True)


@app.command("create")
def key_create(ctx: typer.Context, name: str) -> None:
    """Create an API key for the tenant; prints it (shown once)."""
    c = ctx_of(ctx)
    created = c.client().post(f"/tenants/{c.t()}/api-keys", {"name": name})
    c.show(created, lambda: console.print(f"API key (shown once): {created['api_key']}"))


@app.command("ls")
def key_ls(ctx: typer.Context) -> None:
    """List the tenant's API keys (never their secrets)."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/api-keys")
    c.show(rows, lambda: table(rows, ["id", "name", "role", "created_at", "revoked"]))


@app.command("revoke")
def key_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Revoke an API key."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/api-keys/{key_id}")
    console.print(f"API key {key_id} revoked")
