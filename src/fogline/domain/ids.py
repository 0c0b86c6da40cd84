"""Identifier rules.

Ids travel inside NATS subjects and MQTT topics, so they are slugs: no `.`, `/`, `*`, `>`, `+`,
`#` or spaces. We go further and allow only lowercase letters, digits, `-` and `_`, starting with a
letter or digit, which keeps ids safe in URLs, file names and SQL identifiers too.
"""

from __future__ import annotations

import re

from fogline.domain.errors import InvalidInput, Problem

MAX_ID_LENGTH = 64
SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"  # also the API schema's pattern for every id
_SLUG = re.compile(SLUG_PATTERN)


def slug_problem(value: object, field: str = "id") -> Problem | None:
    """Why `value` is not a valid id, or None when it is one."""
    if not isinstance(value, str):
        return Problem(field, "must be a string")
    if not value:
        return Problem(field, "must not be empty")
    if len(value) > MAX_ID_LENGTH:
        return Problem(field, f"must be at most {MAX_ID_LENGTH} characters")
    if not _SLUG.fullmatch(value):  # fullmatch: `$` alone lets a final newline in
        return Problem(
            field,
            f"{value!r} is not a slug: use lowercase letters, digits, '-' and '_', "
            "starting with a letter or digit",
        )
    return None


def is_slug(value: object) -> bool:
    return slug_problem(value) is None


def require_slug(value: object, field: str = "id") -> str:
    problem = slug_problem(value, field)
    if problem is not None:
        raise InvalidInput.of([problem])
    assert isinstance(value, str)
    return value
