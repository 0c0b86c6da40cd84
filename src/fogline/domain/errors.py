"""The error family every context builds on.

Each error carries a kind; the API maps kinds to HTTP problem responses and the CLI maps them
to messages and exit codes, once, so no context needs to know about either.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class ErrorKind(Enum):
    INVALID = "invalid"
    NOT_FOUND = "not-found"
    CONFLICT = "conflict"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    UNAVAILABLE = "unavailable"
    CONFIGURATION = "configuration"
    INTERNAL = "internal"


# The HTTP status of a problem of each kind: what the API answers, and what the CLI shows for
# an error raised on its side (an error reads the same wherever it arose).
STATUS_OF_KIND = {
    ErrorKind.INVALID: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.CONFLICT: 409,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.FORBIDDEN: 403,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.CONFIGURATION: 500,
    ErrorKind.INTERNAL: 500,
}


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input: where (a dotted field path) and why."""

    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class FoglineError(Exception):
    kind: ErrorKind = ErrorKind.INTERNAL

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return self.message
        return self.message + "\n" + "\n".join(f"  - {p}" for p in self.problems)


class InvalidInput(FoglineError):
    kind = ErrorKind.INVALID

    @classmethod
    def of(cls, problems: list[Problem], what: str = "input") -> InvalidInput:
        count = len(problems)
        noun = "problem" if count == 1 else "problems"
        return cls(f"invalid {what}: {count} {noun}", problems)


class NotFound(FoglineError):
    kind = ErrorKind.NOT_FOUND


class AlreadyExists(FoglineError):
    kind = ErrorKind.CONFLICT


class Conflict(FoglineError):
    kind = ErrorKind.CONFLICT


class Unauthenticated(FoglineError):
    kind = ErrorKind.UNAUTHENTICATED


class Forbidden(FoglineError):
    kind = ErrorKind.FORBIDDEN


class Unavailable(FoglineError):
    kind = ErrorKind.UNAVAILABLE
    retry_after_s = 5  # what a 503 tells the client to wait before it tries again


class ConfigurationError(FoglineError):
    kind = ErrorKind.CONFIGURATION
