"""Printing results and errors the same way in every command."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from fogline.domain.errors import STATUS_OF_KIND, ErrorKind, FoglineError

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


TITLE_OF_KIND = {
    ErrorKind.INVALID: "Invalid input",
    ErrorKind.NOT_FOUND: "Not found",
    ErrorKind.CONFLICT: "Conflict",
    ErrorKind.UNAUTHENTICATED: "Not authenticated",
    ErrorKind.FORBIDDEN: "Forbidden",
    ErrorKind.UNAVAILABLE: "Service unavailable",
    ErrorKind.CONFIGURATION: "Configuration error",
    ErrorKind.INTERNAL: "Internal error",
}


def fail(exc: FoglineError, as_json: bool = False, next_step: str | None = None) -> int:
    """One clear message on stderr, every problem listed, the command to run next when there is
    one, and an exit code per kind. With --json, the same as one problem document."""
    if as_json:
        document = problem_document(exc)
        if next_step:
            document["next_step"] = next_step
        sys.stderr.write(json.dumps(document, default=str) + "\n")
        return EXIT_CODES[exc.kind]
    errors.print(
        f"[bold red]error:[/] {escape(visible(exc.message))}", highlight=False, soft_wrap=True
    )
    for p in exc.problems:
        errors.print(f"  - {visible(str(p))}", highlight=False, markup=False, soft_wrap=True)
    if next_step:
        errors.print(f"next: {next_step}", highlight=False, markup=False, soft_wrap=True)
    return EXIT_CODES[exc.kind]


def problem_document(exc: FoglineError) -> dict[str, Any]:
    """An error as an RFC 9457 problem: the API's own answer when it came from the API, the
    same shape for one raised here (no platform to reach, a bad file)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and "status" in body:
        return {"errors": [], **body}
    status = getattr(exc, "status", None) or STATUS_OF_KIND[exc.kind]
    return {
        "type": "about:blank",
        "title": TITLE_OF_KIND[exc.kind],
        "status": status,
        "detail": exc.message,
        "errors": [{"field": p.field, "reason": p.reason} for p in exc.problems],
    }


def fail_usage(message: str, code: int) -> int:
    """A command line click refused (an unknown option, a missing argument), under --json."""
    document = {
        "type": "about:blank",
        "title": "Bad request",
        "status": 400,
        "detail": message,
        "errors": [],
    }
    sys.stderr.write(json.dumps(document) + "\n")
    return code


def emit_json(value: Any, compact: bool = False) -> None:
    """JSON on stdout: indented, or (compact) one document per line for streams."""
    text = json.dumps(value, default=str) if compact else json.dumps(value, indent=2, default=str)
    sys.stdout.write(text + "\n")


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Rows as a table that wraps long cells rather than cutting them: an id that does not fit
    folds onto the next line, never ends in `…` (a person copies ids from here)."""
    t = Table(title=title, show_lines=False)
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*(escape(visible(cell(row.get(c)))) for c in columns))
    console.print(t)


def visible(text: str) -> str:
    """Text with its control characters (a terminal's escape sequences, new lines that would
    fake a row, bidirectional overrides that reorder what is shown) written as escapes: what
    a device or a tenant stored must not drive the operator's terminal."""
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )


def cell(value: Any) -> str:
    """A value as a person reads it in a table: a mapping as k=v pairs, a list comma-separated,
    anything nested deeper as compact JSON; never a Python repr."""
    if value is None:
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={_scalar(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_scalar(v) for v in value)
    return _scalar(value)


def _scalar(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "" if value is None else str(value)
