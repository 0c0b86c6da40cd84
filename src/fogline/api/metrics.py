"""The platform's state in Prometheus' text format, for a scraper: what `/api/v1/ready` and
`/api/v1/system` say, as gauges and counters, and the API's own requests (prometheus_client
renders them)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield CounterMetricFamily(name, doc, value=float(value))


class _Snapshot(Collector):
    """One scrape's figures, taken from the readiness report and the system report."""

    def __init__(
        self, ready: dict[str, Any], system: dict[str, Any], models: list[dict[str, Any]]
    ) -> None:
        self.ready = ready
        self.system = system
        self.models = models

    def collect(self) -> Iterator[Metric]:
        ready, system = self.ready, self.system
        yield from _gauge("fogline_ready", "1 when the platform takes data in", ready["ready"])
        parts = GaugeMetricFamily("fogline_part_ok", "1 when a part is well", labels=["part"])
        for name, check in sorted(ready.get("checks", {}).items()):
            parts.add_metric([name], 1.0 if check.get("ok") else 0.0)
        yield parts
        disk = system.get("disk") or {}
        yield from _gauge(
            "fogline_disk_free_bytes", "free on the data dir's fs", disk.get("free_bytes")
        )
        yield from _gauge(
            "fogline_disk_total_bytes", "size of the data dir's fs", disk.get("total_bytes")
        )
        yield from _gauge(
            "fogline_disk_reserve_bytes", "kept free: data refused below", disk.get("reserve_bytes")
        )
        yield from _gauge(
            "fogline_disk_days_left",
            "days until the reserve at the current rate",
            disk.get("days_left"),
        )
        yield from _gauge(
            "fogline_disk_refusing", "1 while new data is refused", disk.get("refusing")
        )
        yield from _counter(
            "fogline_disk_refusals", "times new data was refused", disk.get("refusals")
        )
        yield from _counter(
            "fogline_broker_restarts", "embedded nats-server restarts", system.get("nats_restarts")
        )
        yield from _counter(
            "fogline_historian_restarts",
            "historian process restarts",
            system.get("historian_restarts"),
        )
        historian = system.get("historian") or {}
        yield from _counter(
            "fogline_ingest_messages", "telemetry messages committed", historian.get("messages")
        )
        yield from _counter(
            "fogline_ingest_values", "telemetry values committed", historian.get("values")
        )
        yield from _counter(
            "fogline_ingest_dead_letters", "dead letters kept", historian.get("dead_letters")
        )
        yield from _counter(
            "fogline_historian_failures", "failed historian steps", historian.get("failures")
        )
        yield from _gauge(
            "fogline_historian_backlog",
            "messages waiting in the hot store",
            historian.get("backlog"),
        )
        last = historian.get("last_commit_ms")
        yield from _gauge(
            "fogline_historian_last_commit_timestamp_seconds",
            "when the historian last committed",
            last / 1000 if last else None,
        )
        yield from _models(self.models)
        security = (system.get("security") or {}).get("totals")
        if security is not None:
            refused = CounterMetricFamily(
                "fogline_security_events",
                "logins, publishes and subscriptions nats-server refused, by kind",
                labels=["kind"],
            )
            for kind, count in sorted(security.items()):
                refused.add_metric([kind], float(count))
            yield refused
        retention = system.get("retention") or {}
        yield from _counter(
            "fogline_retention_readings_deleted",
            "readings expired",
            retention.get("readings_deleted"),
        )


# Where the readings each model's companion accepted are, as counters per outcome (since the
# platform started) and gauges for what waits: accepted = scored + dead-lettered + queued +
# in flight.
_OUTCOMES = (("scored", "scored"), ("dead_lettered", "dead-lettered"))


def _models(models: list[dict[str, Any]]) -> Iterator[Metric]:
    labels = ["model", "version", "tenant"]
    readings = CounterMetricFamily(
        "fogline_model_readings",
        "readings a model's companion accepted, by outcome",
        labels=["model", "outcome", "tenant", "version"],
    )
    queued = GaugeMetricFamily("fogline_model_queued", "readings waiting for a call", labels=labels)
    oldest = GaugeMetricFamily(
        "fogline_model_oldest_queued_seconds", "age of the oldest queued reading", labels=labels
    )
    restarts = CounterMetricFamily("fogline_model_restarts", "model restarts", labels=labels)
    degraded = GaugeMetricFamily("fogline_model_degraded", "1 while not well", labels=labels)
    for item in models:
        tenant, model, version = str(item["id"]).split("/", 2)
        restarts.add_metric([model, version, tenant], float(item["restarts"]))
        degraded.add_metric([model, version, tenant], 1.0 if item["degraded"] else 0.0)
        r = item.get("readings")
        if not r:
            continue
        for key, outcome in _OUTCOMES:
            readings.add_metric([model, outcome, tenant, version], float(r[key]))
        readings.add_metric([model, "accepted", tenant, version], float(r["accepted"]))
        queued.add_metric([model, version, tenant], float(r["queued"] + r["in_flight"]))
        oldest.add_metric([model, version, tenant], float(r["oldest_queued_age_s"] or 0.0))
    yield from (readings, queued, oldest, restarts, degraded)


# Seconds; from a cached key check (a few ms) to a history page or a package upload.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class RequestFigures:
    """The API's requests since the platform started, by method, route and status: counted
    by route *template* (`/tenants/{tenant}/assets/{asset}`), so a scraper sees a bounded set
    of series however many devices and assets there are; paths no route matches are one
    series (`unmatched`). One registry per app, not prometheus_client's global one: several
    platforms may share a process (the tests do)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter(
            "fogline_api_requests",
            "HTTP requests answered, by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "fogline_api_request_duration_seconds",
            "time to the end of the answer, by method and route",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.seconds.labels(method, route).observe(seconds)


class RequestFiguresMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware): streamed answers (exports, the live feed) pass
    through untouched and are timed to their last byte."""

    def __init__(self, app: ASGIApp, figures: Callable[[], RequestFigures]) -> None:
        self.app = app
        self.figures = figures

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before it answers

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or "unmatched"
            self.figures().observe(scope["method"], template, status, time.perf_counter() - started)


def render(
    ready: dict[str, Any],
    system: dict[str, Any],
    models: list[dict[str, Any]] | None = None,
    requests: RequestFigures | None = None,
) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(ready, system, models or []))
    text = generate_latest(registry)
    return text if requests is None else text + generate_latest(requests.registry)
