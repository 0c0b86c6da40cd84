"""What to do next, for the errors a person meets first: the CLI names the command or option,
where the API's message only says what went wrong (and must stay the same for every client)."""

from __future__ import annotations

from fogline.client.http import ApiError, Unreachable
from fogline.domain.errors import ErrorKind, FoglineError


class Advised(FoglineError):
    """An error a command recognised, with the command to run next. It keeps the original's
    kind, problems and (for an API error) status and answer, so exit codes and --json stay
    the same."""

    def __init__(self, cause: FoglineError, next_step: str) -> None:
        super().__init__(cause.message, cause.problems)
        self.kind = cause.kind
        self.status = getattr(cause, "status", None)
        self.body = getattr(cause, "body", None)
        self.next_step = next_step


def next_step_for(exc: FoglineError) -> str | None:
    """The next step for an error any command can meet; None when there is nothing to add."""
    if isinstance(exc, Advised):
        return exc.next_step
    if isinstance(exc, Unreachable):
        url = exc.url.removesuffix("/api/v1")
        said = exc.message.lower()
        if "certificate" in said:
            return (
                f"the platform at {url} answered, but its TLS certificate is not one this "
                "machine trusts: give the certificate (or its CA) with FOGLINE_CA_FILE=PATH"
            )
        if url.startswith("http://") and ("disconnected" in said or "reset" in said):
            return (
                f"something at {url} closed the connection at once: if the platform serves "
                "HTTPS (TLS on), use https:// in --url (or FOGLINE_URL)"
            )
        return (
            f"no platform runs at {url}: start one with `fogline up` (it saves its URL and key "
            "for this CLI in the data dir), or point at a running one with --url URL "
            "(or FOGLINE_URL)"
        )
    if isinstance(exc, ApiError) and exc.kind is ErrorKind.UNAUTHENTICATED:
        return (
            "give a valid API key with --api-key KEY (or FOGLINE_API_KEY), or --data-dir DIR of "
            "a local platform to use the key its `fogline up` saved; an admin makes a key with "
            "`fogline key create NAME`"
        )
    return None


def mapping_needed(exc: ApiError, name: str, version: str) -> FoglineError:
    """A deployment refused for want of mappings (the problem at field `mappings`), with the
    command that makes them."""
    if any(p.field == "mappings" for p in exc.problems):
        return Advised(
            exc,
            f"map the model first: `fogline model map {name} {version} --type ASSET_TYPE` "
            "(or --asset ASSET_ID), then deploy again",
        )
    return exc
