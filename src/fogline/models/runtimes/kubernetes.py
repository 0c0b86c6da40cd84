"""The Kubernetes runtime, planned: what it will create for a model, so the next runtime has
its shape. It is not selectable yet; the saga refuses `container`-only models with a clear
message until it lands.

Per model (namespace `fogline-<tenant>-<name>`):
- a Deployment of `container.image:tag` (pulled with `customRegistry` credentials as an
  imagePullSecret), `runAsNonRoot: true`, read-only root filesystem, no privilege escalation;
- a ResourceQuota from `model.local.limits` (cpus, memoryMb) and a LimitRange;
- a Service on the model port, and a NetworkPolicy that admits only the data companion's pods
  (label `fogline.io/companion=<model>`), with egress only to the callback URL;
- health from the manifest's `healthCheckEndpoint` as readiness and liveness probes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fogline.models.runtimes.base import ModelSpec


@dataclass(frozen=True)
class KubernetesPlan:
    namespace: str
    image: str
    cpus: int
    memory_mb: int
    companion_label: str
    health_path: str = "/health"

    @classmethod
    def of(cls, spec: ModelSpec) -> KubernetesPlan:
        model = spec.manifest.model
        container = model.container
        image = f"{container.image}:{container.tag}" if container else ""
        limits = model.local.limits if model.local else None
        return cls(
            namespace=f"fogline-{spec.tenant}-{spec.name}",
            image=image,
            cpus=limits.cpus if limits else 1,
            memory_mb=limits.memory_mb if limits else 1024,
            companion_label=spec.name,
            health_path=model.health_check_endpoint,
        )

    def objects(self) -> list[dict[str, Any]]:
        """The namespace, quota, network policy and non-root Deployment the runtime will
        apply."""
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}},
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "model", "namespace": self.namespace},
                "spec": {
                    "hard": {"limits.cpu": str(self.cpus), "limits.memory": f"{self.memory_mb}Mi"}
                },
            },
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": "companion-only", "namespace": self.namespace},
                "spec": {
                    "podSelector": {},
                    "policyTypes": ["Ingress"],
                    "ingress": [
                        {
                            "from": [
                                {
                                    "podSelector": {
                                        "matchLabels": {
                                            "fogline.io/companion": self.companion_label
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            },
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "model", "namespace": self.namespace},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"fogline.io/model": self.companion_label}},
                    "template": {
                        "metadata": {"labels": {"fogline.io/model": self.companion_label}},
                        "spec": {
                            "securityContext": {"runAsNonRoot": True},
                            "containers": [
                                {
                                    "name": "model",
                                    "image": self.image,
                                    "securityContext": {
                                        "allowPrivilegeEscalation": False,
                                        "readOnlyRootFilesystem": True,
                                    },
                                    "resources": {
                                        "limits": {
                                            "cpu": str(self.cpus),
                                            "memory": f"{self.memory_mb}Mi",
                                        }
                                    },
                                    "readinessProbe": {
                                        "httpGet": {"path": self.health_path, "port": 8080}
                                    },
                                    "livenessProbe": {
                                        "httpGet": {"path": self.health_path, "port": 8080}
                                    },
                                }
                            ],
                        },
                    },
                },
            },
        ]
