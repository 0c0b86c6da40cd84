"""`fogline retention`: how long the tenant's SQL history is kept, per tenant and asset type."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fogline.cli.context import ctx_of
from fogline.cli.output import console, table
from fogline.domain.errors import InvalidInput, Problem

app = typer.Typer(help="Retention of the telemetry history (SQL).", no_args_is_help=True)

INHERIT = "inherit"
AssetTypeOption = Annotated[
    str | None, typer.Option("--asset-type", help="the asset type's own policy")
]


def _path(tenant: str, asset_type: str | None) -> str:
    if asset_type is None:
        return f"/tenants/{tenant}/retention"
    return f"/tenants/{tenant}/asset-types/{asset_type}/retention"


def _effective(policy: dict[str, Any]) -> str:
    return (
        f"history {policy['history']} (from {policy['history_from']}), "
        f"aggregates {policy['aggregates']} (from {policy['aggregates_from']})"
    )


def _show_tenant(result: dict[str, Any]) -> None:
    console.print(f"platform default: {_effective(result['platform'])}")
    console.print(f"tenant {result['tenant']}: {_effective(result['effective'])}")
    rows = [
        {
            "asset_type": t["asset_type"],
            "history": t["effective"]["history"],
            "history_from": t["effective"]["history_from"],
            "aggregates": t["effective"]["aggregates"],
            "aggregates_from": t["effective"]["aggregates_from"],
        }
        for t in result["asset_types"]
    ]
    if rows:
        table(rows, ["asset_type", "history", "history_from", "aggregates", "aggregates_from"])


def _show(result: dict[str, Any]) -> None:
    if "asset_types" in result:
        _show_tenant(result)
    else:
        console.print(f"asset type {result['asset_type']}: {_effective(result['effective'])}")


@app.command("show")
def retention_show(ctx: typer.Context, asset_type: AssetTypeOption = None) -> None:
    """The policy in force: the platform's default, the tenant's, each asset type's."""
    c = ctx_of(ctx)
    result = c.client().get(_path(c.t(), asset_type))
    c.show(result, lambda: _show(result))


@app.command("set")
def retention_set(
    ctx: typer.Context,
    asset_type: AssetTypeOption = None,
    history: Annotated[
        str | None,
        typer.Option(
            help="raw readings: a duration (1h at least: 12h, 90d, 52w), forever, inherit"
        ),
    ] = None,
    aggregates: Annotated[
        str | None,
        typer.Option(
            help="hourly aggregates of expired readings: a duration, forever, none, inherit"
        ),
    ] = None,
) -> None:
    """Override the policy for the tenant, or for one asset type (--asset-type). A part not
    given is left as it is; `inherit` takes it from the level above."""
    if history is None and aggregates is None:
        raise InvalidInput.of(
            [Problem("", "give --history, --aggregates or both")], "retention policy"
        )
    c = ctx_of(ctx)
    path = _path(c.t(), asset_type)
    own = c.client().get(path)["override"]
    body = {
        "history": own["history"] if history is None else _part(history),
        "aggregates": own["aggregates"] if aggregates is None else _part(aggregates),
    }
    result = c.client().put(path, body)
    c.show(result, lambda: _show(result))


def _part(text: str) -> str | None:
    return None if text.strip() == INHERIT else text
