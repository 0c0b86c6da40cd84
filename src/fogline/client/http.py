"""Calls to `/api/v1`, with problem responses turned back into Fogline errors."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import httpx

from fogline.domain.errors import (
    ConfigurationError,
    ErrorKind,
    FoglineError,
    Problem,
    Unavailable,
)

KIND_OF_STATUS = {
    400: ErrorKind.INVALID,
    401: ErrorKind.UNAUTHENTICATED,
    403: ErrorKind.FORBIDDEN,
    404: ErrorKind.NOT_FOUND,
    405: ErrorKind.INVALID,
    409: ErrorKind.CONFLICT,
    413: ErrorKind.INVALID,
    422: ErrorKind.INVALID,
    503: ErrorKind.UNAVAILABLE,
}


class ApiError(FoglineError):
    def __init__(self, status: int, message: str, problems: list[Problem], body: Any) -> None:
        super().__init__(message, problems)
        self.status = status
        self.kind = KIND_OF_STATUS.get(status, ErrorKind.INTERNAL)
        self.body = body


class Unreachable(Unavailable):
    """Nothing answered at the platform's URL (refused, no route, timed out)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach Fogline at {url}: {reason}")
        self.url = url


class Connection(NamedTuple):
    url: str
    api_key: str | None
    tenant: str | None
    ca_file: str | None  # the certificate (or CA) to trust for an https URL; None: the system's


def resolve_connection(url: str | None, api_key: str | None, data_dir: Path | None) -> Connection:
    """URL, API key and default tenant: flags, then FOGLINE_URL / FOGLINE_API_KEY, then the
    client.json a local `fogline up` wrote. The certificate to trust: FOGLINE_CA_FILE, else
    the one client.json names for its own URL (a platform with TLS writes its certificate)."""
    url = url or os.environ.get("FOGLINE_URL")
    api_key = api_key or os.environ.get("FOGLINE_API_KEY")
    tenant = os.environ.get("FOGLINE_TENANT")
    ca_file = os.environ.get("FOGLINE_CA_FILE") or None
    directory = data_dir or Path(os.environ.get("FOGLINE_DATA_DIR", Path.home() / ".fogline"))
    client_file = directory / "client.json"
    if (url is None or api_key is None) and client_file.is_file():
        try:
            saved = json.loads(client_file.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"cannot read {client_file}: {exc}") from None
        if url is None or url == saved.get("url"):
            ca_file = ca_file or saved.get("ca_file")
        url = url or saved.get("url")
        api_key = api_key or saved.get("api_key")
        tenant = tenant or saved.get("tenant")
    if url is None:
        raise ConfigurationError(
            "no Fogline to talk to: start one with `fogline up`, or give --url / FOGLINE_URL"
        )
    return Connection(url.rstrip("/"), api_key, tenant, ca_file)


def trusting(ca_file: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies an https server with: the system's CAs, or the given file. A
    certificate in that file is trusted as it is, even one a CA signed (partial chain): the
    platform's own certificate is all a local CLI needs to know it."""
    if ca_file is None:
        return True
    try:
        context = ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot use {ca_file} as the certificate to trust: {exc}"
        ) from None
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


KEEPALIVE_EXPIRY_S = 4.0


class FoglineClient:
    def __init__(
        self, url: str, api_key: str | None, timeout: float = 30.0, ca_file: str | None = None
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.base = url.rstrip("/") + "/api/v1"
        # An idle connection is dropped before the server drops it (uvicorn after 15 s): a
        # request sent on one the server is closing fails with "Server disconnected".
        limits = httpx.Limits(keepalive_expiry=KEEPALIVE_EXPIRY_S)
        self.http = httpx.Client(
            base_url=self.base,
            headers=headers,
            timeout=timeout,
            limits=limits,
            verify=trusting(ca_file),
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> FoglineClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise Unreachable(self.base, str(exc)) from None
        return self._result(response)

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        if response.status_code == 204:
            return None
        try:
            body = response.json()
        except ValueError:
            body = response.text
        if response.is_success:
            return body
        if isinstance(body, dict):
            problems = [
                Problem(str(e.get("field", "")), str(e.get("reason", "")))
                for e in body.get("errors", [])
            ]
            detail = str(body.get("detail") or body.get("title") or response.reason_phrase)
        else:
            problems, detail = [], f"HTTP {response.status_code}: {str(body)[:200]}"
        raise ApiError(response.status_code, detail, problems, body)

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def send_telemetry(
        self, tenant: str, device: str, payload: bytes, idempotency_key: str | None = None
    ) -> Any:
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self.request(
            "POST",
            f"/tenants/{tenant}/devices/{device}/telemetry",
            content=payload,
            headers=headers,
        )

    def live(self, tenant: str, asset: str) -> Iterator[tuple[str, str]]:
        """(event, data) pairs from the live stream, until the caller stops reading. The
        server's `error` event (a problem: the key was revoked, say) raises it."""
        for _id, event, data in self._sse(f"/tenants/{tenant}/assets/{asset}/telemetry/live"):
            yield event, data

    def events(
        self, tenant: str, after: int = 0, types: list[str] | None = None, limit: int = 100
    ) -> dict[str, Any]:
        """A page of the tenant's platform events after a sequence."""
        page: dict[str, Any] = self.get(
            f"/tenants/{tenant}/events", after=after, type=types or [], limit=limit
        )
        return page

    def follow_events(
        self, tenant: str, after: int = 0, types: list[str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Stored events after `after`, then new ones as they happen, each as
        {"seq": ..., "event": {...}}, until the caller stops reading."""
        params: dict[str, Any] = {"after": after, "type": types or []}
        for sse_id, _event, data in self._sse(f"/tenants/{tenant}/events/stream", params):
            if sse_id:  # events have their sequence; `following` (where it starts) has none
                yield {"seq": int(sse_id), "event": json.loads(data)}

    def follow_model_log(
        self, tenant: str, name: str, version: str, lines: int = 10
    ) -> Iterator[str]:
        """A model's last log lines, then each new one as it is written, until the caller
        stops reading."""
        where = f"/tenants/{tenant}/models/{name}/{version}/logs/stream"
        for _id, event, data in self._sse(where, {"lines": lines}):
            if event == "line":
                yield data

    def download(self, path: str, out: BinaryIO, **params: Any) -> int:
        """A streamed response body written to `out` as it arrives (never held whole); the
        number of bytes written. An error answer raises before anything is written."""
        query = {k: v for k, v in params.items() if v is not None}
        written = 0
        try:
            with self.http.stream("GET", path, params=query, timeout=None) as response:
                if not response.is_success:
                    response.read()
                    self._result(response)
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
        except httpx.TransportError as exc:
            raise Unavailable(f"the download from {self.base} broke off: {exc}") from None
        return written

    def _sse(
        self, path: str, params: dict[str, Any] | None = None
    ) -> Iterator[tuple[str | None, str, str]]:
        """(id, event, data) of a Server-Sent Events response, until the caller stops
        reading. The server's `error` event (a problem: the key was revoked, say) raises it."""
        try:
            with self.http.stream("GET", path, params=params, timeout=None) as response:
                if not response.is_success:
                    response.read()
                    self._result(response)
                sse_id: str | None = None
                event = "message"
                for line in response.iter_lines():
                    if line.startswith("id:"):
                        sse_id = line[3:].strip()
                    elif line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:"):
                        data = line[5:].strip()
                        if event == "error":
                            problem = json.loads(data)
                            status = int(problem.get("status", 500))
                            raise ApiError(status, str(problem.get("detail")), [], problem)
                        yield sse_id, event, data
                        sse_id, event = None, "message"
        except httpx.TransportError as exc:
            raise Unavailable(f"the stream from {self.base} broke off: {exc}") from None
