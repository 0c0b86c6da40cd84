"""Printing results and errors the same way in every command."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fogline.domain.errors import ErrorKind, FoglineError

console = Console()
errors = Console(stderr=True)

EXIT_CODES = {
    ErrorKind.INVALID: 2,
    ErrorKind.NOT_FOUND: 3,
    ErrorKind.CONFLICT: 4,
    ErrorKind.UNAUTHENTICATED: 5,
    ErrorKind.FORBIDDEN: 5,
    ErrorKind.UNAVAILABLE: 6,
    ErrorKind.CONFIGURATION: 7,
    ErrorKind.INTERNAL: 1,
}


def fail(exc: FoglineError) -> int:
    """One clear message on stderr, every problem listed, and an exit code per kind."""
    errors.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
    for p in exc.problems:
        errors.print(f"  - {p}", highlight=False, markup=False, soft_wrap=True)
    return EXIT_CODES[exc.kind]


def emit_json(value: Any, compact: bool = False) -> None:
    """JSON on stdout: indented, or (compact) one document per line for streams."""
    text = json.dumps(value, default=str) if compact else json.dumps(value, indent=2, default=str)
    sys.stdout.write(text + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c)
    for row in rows:
        t.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(t)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return str(value)
