"""`fogline`: run the platform; manage tenants, assets, devices and telemetry through its API.

This module only assembles the command groups of `fogline.cli.commands` under the global options.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from fogline import __version__
from fogline.cli import output
from fogline.cli.commands import (
    asset_types,
    assets,
    backup,
    bench,
    devices,
    events,
    keys,
    library,
    models,
    platform,
    retention,
    telemetry,
    tenants,
)
from fogline.cli.context import Context
from fogline.cli.next_steps import next_step_for
from fogline.domain.errors import FoglineError, InvalidInput, Problem

app = typer.Typer(
    name="fogline",
    help="Fogline: ML models on IoT fleets, from device telemetry to deployed models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Added without a name, the platform's commands (up, status, ...) sit at the top level; added
# first, they are listed before the groups in `fogline --help`.
app.add_typer(platform.app)
app.add_typer(backup.app)  # `fogline backup` and `fogline restore`, at the top level
app.add_typer(tenants.app, name="tenant")
app.add_typer(keys.app, name="key")
app.add_typer(asset_types.app, name="asset-type")
app.add_typer(assets.app, name="asset")
app.add_typer(devices.app, name="device")
app.add_typer(telemetry.app, name="telemetry")
app.add_typer(retention.app, name="retention")
app.add_typer(bench.app, name="bench")
app.add_typer(models.app, name="model")
app.add_typer(library.app, name="library")
app.add_typer(events.app)  # `fogline events`, at the top level


def _print_version(value: bool) -> None:
    if value:
        output.console.print(__version__, highlight=False)
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(help="Fogline API URL \\[env: FOGLINE_URL]")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key \\[env: FOGLINE_API_KEY]", show_default=False)
    ] = None,
    tenant: Annotated[str | None, typer.Option(help="tenant \\[env: FOGLINE_TENANT]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="data dir of a local platform \\[env: FOGLINE_DATA_DIR]")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print JSON (errors too: a problem document on stderr)")
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="print Fogline's version and exit",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    ctx.obj = Context(url, api_key, tenant, data_dir, as_json)


GLOBAL_FLAGS = {"--json"}
GLOBAL_OPTIONS = {"--url", "--api-key", "--tenant", "--data-dir"}


def hoist_global_options(argv: list[str]) -> list[str]:
    """Let global options stand anywhere (`fogline device ls --json`), as users type them."""
    hoisted: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name = arg.split("=", 1)[0]
        if arg == "--":
            rest += argv[i:]
            break
        if arg in GLOBAL_FLAGS or (name in GLOBAL_OPTIONS and "=" in arg):
            hoisted.append(arg)
        elif arg in GLOBAL_OPTIONS and i + 1 < len(argv):
            hoisted += argv[i : i + 2]
            i += 1
        else:
            rest.append(arg)
        i += 1
    return hoisted + rest


def wants_json(argv: list[str]) -> bool:
    """--json among the options (before any `--`): errors print as JSON too."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def main() -> None:
    # Every command's errors end here: one message (or, with --json, one problem document),
    # the next step where there is one, and an exit code per kind (output.fail).
    argv = hoist_global_options(sys.argv[1:])
    as_json = wants_json(argv)
    try:
        # Not standalone, click hands a command's `typer.Exit` code back instead of exiting.
        code = app(args=argv, prog_name="fogline", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except FoglineError as exc:
        sys.exit(output.fail(exc, as_json, next_step_for(exc)))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except BrokenPipeError:
        # `fogline ... | head` closed our output: end quietly, as a filter should. (Not by
        # letting SIGPIPE kill us: `fogline up` writes to sockets, and a peer gone would
        # kill the whole platform without a word.)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        # A local file the command reads or writes (a folder that is not there, no right to
        # write): the user's to fix, said as such, not a traceback.
        where = str(exc.filename) if exc.filename else "file"
        problem = Problem(where, exc.strerror or str(exc))
        sys.exit(output.fail(InvalidInput.of([problem], "file"), as_json))
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if as_json:
            sys.exit(output.fail_usage(str(exc), getattr(exc, "exit_code", 2)))
        if show is not None:
            show()
        else:
            output.errors.print(f"error: {exc}")
        sys.exit(getattr(exc, "exit_code", 2))


if __name__ == "__main__":
    main()
