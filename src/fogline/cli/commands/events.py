"""`fogline events`: what changed on the platform, from the durable events stream."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from fogline.cli.context import ctx_of
from fogline.cli.output import emit_json
from fogline.domain.timeseries import iso_from_ms

app = typer.Typer()

_EVENT_TYPES = (
    "model.transitioned, registry.changed, device.changed, mappings.changed, deployment.step"
)


@app.command("events")
def events(
    ctx: typer.Context,
    after: Annotated[int, typer.Option(help="only events after this sequence")] = 0,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", help=f"only this type (repeatable): {_EVENT_TYPES}"),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events")
    ] = False,
    limit: Annotated[int, typer.Option(help="at most this many (without --follow)")] = 100,
) -> None:
    """Platform events of the tenant, oldest first: model transitions, registry and device
    changes, mappings, deployment steps. Each has a sequence; --after resumes after one."""
    c = ctx_of(ctx)
    if follow:
        for stored in c.client().follow_events(c.t(), after, event_type):
            _print(stored, c.as_json)
        return
    page = c.client().events(c.t(), after, event_type, limit)
    if c.as_json:
        emit_json(page)
        return
    for stored in page["events"]:
        _print(stored, as_json=False)


def _print(stored: dict[str, Any], as_json: bool) -> None:
    if as_json:  # one JSON document per line: what a script reading a stream wants
        emit_json(stored, compact=True)
    else:
        sys.stdout.write(describe(stored) + "\n")
    sys.stdout.flush()


def describe(stored: dict[str, Any]) -> str:
    """One line: sequence, time, type, and what happened."""
    e = stored["event"]
    return f"{stored['seq']:>6}  {iso_from_ms(e['at'])}  {e['type']:<18}  {_summary(e)}"


def _summary(e: dict[str, Any]) -> str:
    kind = e["type"]
    if kind == "model.transitioned":
        return (
            f"{e['model']} {e['version']}: {e['from_state'] or '-'} -> {e['to_state']} "
            f"({e['event']}{': ' + e['reason'] if e.get('reason') else ''})"
        )
    if kind == "registry.changed":
        return f"{e['kind'].replace('_', ' ')} {e['target']} {e['change']}"
    if kind == "device.changed":
        if e["change"] == "updated" and e.get("credentials_changed"):
            return f"device {e['device']} given a new password"
        return f"device {e['device']} {e['change']}"
    if kind == "mappings.changed":
        targets = ", ".join(e["assets"] + [f"type {t}" for t in e["asset_types"]]) or "none"
        return f"{e['model']} {e['version']} mapped to {targets}"
    if kind == "deployment.step":
        detail = f": {e['detail']}" if e.get("detail") else ""
        return (
            f"{e['model']} {e['version']} {e['saga']}/{e['step']} {e['status']} "
            f"(attempt {e['attempt']}){detail}"
        )
    return ""
