"""`fogline device`: devices and the MQTT credentials they publish with."""

from __future__ import annotations

from typing import Annotated

import typer

from fogline.cli.context import ctx_of
from fogline.cli.inputs import key_value_pairs
from fogline.cli.output import console, emit_json, table

app = typer.Typer(help="Devices and their MQTT credentials.", no_args_is_help=True)


@app.command("create")
def device_create(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str | None, typer.Option()] = None,
    cpu: Annotated[str | None, typer.Option()] = None,
    cores: Annotated[int | None, typer.Option(help="CPU cores")] = None,
    memory_mb: Annotated[int | None, typer.Option()] = None,
    accelerator: Annotated[str | None, typer.Option()] = None,
    connectivity: Annotated[str | None, typer.Option(help="ethernet, wifi, lte, ...")] = None,
    power: Annotated[str | None, typer.Option(help="mains, battery, solar, ...")] = None,
    firmware: Annotated[str | None, typer.Option()] = None,
    label: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
) -> None:
    """Register a device; prints its MQTT credentials (the password is shown once)."""
    c = ctx_of(ctx)
    hardware = {
        "cpu": cpu,
        "cpu_cores": cores,
        "memory_mb": memory_mb,
        "accelerator": accelerator,
        "connectivity": connectivity,
        "power_source": power,
    }
    created = c.client().post(
        f"/tenants/{c.t()}/devices",
        {
            "id": device_id,
            "name": name,
            "firmware": firmware,
            "hardware": {k: v for k, v in hardware.items() if v is not None},
            "labels": {k: str(v) for k, v in key_value_pairs(label, "label").items()},
        },
    )
    creds = created["credentials"]

    def human() -> None:
        console.print(f"device [bold]{device_id}[/] registered")
        console.print(f"  MQTT broker  {creds['mqtt']}")
        console.print(f"  username     {creds['username']}")
        console.print(f"  password     {creds['password']}   (shown once)")
        console.print(f"  topic        {creds['topic']}")

    c.show(created, human)


@app.command("ls")
def device_ls(ctx: typer.Context) -> None:
    """List devices with their ingest counters."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/devices")
    view = [
        {
            **r,
            "messages": (r.get("stats") or {}).get("messages"),
            "dead_letters": (r.get("stats") or {}).get("dead_letters"),
            "last_seen": (r.get("stats") or {}).get("last_seen"),
        }
        for r in rows
    ]
    c.show(
        rows,
        lambda: table(view, ["id", "firmware", "labels", "messages", "dead_letters", "last_seen"]),
    )


@app.command("show")
def device_show(
    ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Show a device, as JSON (the API's answer, every field: a document to read or pipe)."""
    c = ctx_of(ctx)
    emit_json(c.client().get(f"/tenants/{c.t()}/devices/{device_id}"))


@app.command("rotate")
def device_rotate(
    ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Give a device a new MQTT password; the old one stops working."""
    c = ctx_of(ctx)
    creds = c.client().post(f"/tenants/{c.t()}/devices/{device_id}/credentials")
    c.show(creds, lambda: console.print(f"new password (shown once): {creds['password']}"))


@app.command("rm")
def device_rm(ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a device; its credentials stop working."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/devices/{device_id}")
    console.print(f"device {device_id} deleted")
