"""A model hosted elsewhere: nothing to start or stop; the companion calls its URL."""

from __future__ import annotations

from fogline.models.runtimes.base import ModelSpec, RuntimeHandle


class ExternalRuntime:
    kind = "external"

    async def provision(self, spec: ModelSpec) -> None:
        return None

    async def start(self, spec: ModelSpec) -> RuntimeHandle:
        model = spec.manifest.model
        assert model.url is not None  # the manifest check guarantees it
        if model.type == "amqp":
            # amqp://…/<score queue>: the queue names are the manifest's endpoints
            return RuntimeHandle(
                "external",
                score_queue=model.score_endpoint.lstrip("/"),
                health_queue=model.health_check_endpoint.lstrip("/"),
            )
        return RuntimeHandle("external", endpoint=model.url)

    def alive(self, handle: RuntimeHandle) -> bool:
        return True  # only its health checks can tell

    async def stop(self, handle: RuntimeHandle) -> None:
        return None

    async def deprovision(self, spec: ModelSpec) -> None:
        return None
