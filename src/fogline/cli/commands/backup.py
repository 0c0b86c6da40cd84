"""`fogline backup` and `fogline restore`: a whole platform (database, JetStream's store, keys,
model packages) into one archive, and back into a fresh data dir. Both need it stopped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fogline.cli.context import ctx_of
from fogline.cli.output import console

# No name of its own: main.py merges these commands into `fogline` itself.
app = typer.Typer()


@app.command()
def backup(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(metavar="FILE", help="the archive to write (.tar.gz)")],
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
) -> None:
    """Back up the stopped platform of the data dir (--data-dir): its database (SQLite or
    PostgreSQL), JetStream's store, keys and model packages, into one archive (0600: it holds
    secrets). Refused while the platform runs."""
    from fogline.app.backup import backup as run_backup
    from fogline.app.settings import load_settings

    c = ctx_of(ctx)
    settings = load_settings(config, data_dir=c.data_dir)
    summary = run_backup(settings, archive)
    shown = summary.as_json()

    def human() -> None:
        console.print(
            f"backed up {settings.data_dir} to {summary.path} ({summary.size:,} bytes): "
            f"{shown['database']} database at schema version {shown['schema_version']}, "
            f"{shown['tables']} tables, {shown['rows']:,} rows; {shown['files']} files",
            highlight=False,
        )

    c.show(shown, human)


@app.command()
def restore(
    ctx: typer.Context,
    archive: Annotated[Path, typer.Argument(metavar="FILE", help="an archive of fogline backup")],
    config: Annotated[Path | None, typer.Option(help="YAML config file")] = None,
) -> None:
    """Restore a backup into a new or empty data dir (--data-dir) and, with a PostgreSQL
    database URL in the settings, into that empty database or schema. The archive is checked
    as it is read: a damaged one, or one of another schema version, leaves nothing behind."""
    from fogline.app.backup import restore as run_restore
    from fogline.app.settings import load_settings

    c = ctx_of(ctx)
    settings = load_settings(config, data_dir=c.data_dir)
    summary = run_restore(settings, archive)
    shown = {**summary.as_json(), "data_dir": str(settings.data_dir)}

    def human() -> None:
        console.print(
            f"restored {summary.path} (made {shown['created_at']}) into {settings.data_dir}: "
            f"{shown['rows']:,} rows, {shown['files']} files; start it with "
            f"`fogline up --data-dir {settings.data_dir}`",
            highlight=False,
        )

    c.show(shown, human)
