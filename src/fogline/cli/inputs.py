"""Reading what users hand to commands: files, stdin, and `key=value` options."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import yaml

from fogline.domain.errors import InvalidInput, Problem


def read_document(path: Path) -> Any:
    """JSON or YAML from a file, or from stdin for '-'."""
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput.of([Problem(str(path), exc.strerror or str(exc))], "file") from None
    except UnicodeDecodeError as exc:
        problem = Problem(str(path), f"not UTF-8 text (byte {exc.start}): not JSON or YAML")
        raise InvalidInput.of([problem], "file") from None
    try:
        return yaml.safe_load(text)  # YAML is a superset of JSON
    except yaml.YAMLError as exc:
        raise InvalidInput.of([Problem(str(path), f"not JSON or YAML: {exc}")], "file") from None


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InvalidInput.of([Problem(str(path), exc.strerror or str(exc))], "file") from None


def read_bytes_or_stdin(path: Path) -> bytes:
    """A file's bytes, or stdin's for '-' (payloads are passed on untouched, not parsed)."""
    return sys.stdin.buffer.read() if str(path) == "-" else read_bytes(path)


def key_value_pairs(values: list[str] | None, what: str) -> dict[str, Any]:
    """`k=v` options to a dict; values that parse as JSON numbers or booleans become them."""
    result: dict[str, Any] = {}
    problems = []
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            problems.append(Problem(what, f"{item!r} is not key=value"))
            continue
        if key in result:
            problems.append(Problem(f"{what} {key}", "given twice: which one is meant?"))
            continue
        try:
            parsed = json.loads(value)
        except ValueError:
            result[key] = value
            continue
        if isinstance(parsed, float) and not math.isfinite(parsed):
            problems.append(Problem(f"{what} {key}", f"{value!r} is not a finite number"))
            continue
        result[key] = parsed if isinstance(parsed, int | float | bool) else value
    if problems:
        raise InvalidInput.of(problems)
    return result
