"""What every command shares: the platform connection, the tenant, JSON or human output."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from fogline.cli.output import emit_json
from fogline.client.http import FoglineClient, resolve_connection


@dataclass
class Context:
    """The global options of one `fogline` run, and the client they lead to."""

    url: str | None
    api_key: str | None
    tenant: str | None
    data_dir: Path | None
    as_json: bool
    _client: FoglineClient | None = None
    _tenant: str | None = None

    def client(self) -> FoglineClient:
        # Connected on first use: `fogline version` or `up` must work with no platform to find.
        if self._client is None:
            found = resolve_connection(self.url, self.api_key, self.data_dir)
            self._client = FoglineClient(found.url, found.api_key, ca_file=found.ca_file)
            self._tenant = self.tenant or found.tenant or "default"
        return self._client

    def t(self) -> str:
        self.client()
        assert self._tenant is not None
        return self._tenant

    def show(self, value: Any, human: Callable[[], None] | None = None) -> None:
        # --json, or a command with no human view, prints the API's answer as is.
        if self.as_json or human is None:
            emit_json(value)
        else:
            human()


def ctx_of(ctx: typer.Context) -> Context:
    obj: Context = ctx.obj
    return obj
