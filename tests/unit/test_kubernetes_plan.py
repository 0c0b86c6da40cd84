"""The Kubernetes runtime's plan: what it will apply for a model (the runtime is a later
issue; its shape is fixed here)."""

from __future__ import annotations

from fogline.models.manifest import check_manifest
from fogline.models.runtimes.base import ModelSpec
from fogline.models.runtimes.kubernetes import KubernetesPlan

MANIFEST = {
    "manifest": {
        "name": "press-anomaly",
        "version": "1.2.0",
        "model": {
            "type": "http",
            "healthCheckEndpoint": "/ready",
            "container": {"image": "registry.example/acme/press", "tag": "1.2.0"},
            "local": {"command": ["python", "model.py"], "limits": {"memoryMb": 768, "cpus": 2}},
        },
        "trigger": {"type": "REAL_TIME"},
        "inputs": [{"dataColumnName": "pressure"}],
        "outputs": [{"dataColumnName": "score"}],
    }
}


def test_a_namespace_per_model_with_quota_companion_only_ingress_and_non_root() -> None:
    spec = ModelSpec(7, "acme", "press-anomaly", "1.2.0", check_manifest(MANIFEST).manifest, None)
    objects = {o["kind"]: o for o in KubernetesPlan.of(spec).objects()}
    assert set(objects) == {"Namespace", "ResourceQuota", "NetworkPolicy", "Deployment"}
    namespace = "fogline-acme-press-anomaly"
    assert objects["Namespace"]["metadata"]["name"] == namespace
    assert all(o["metadata"].get("namespace", namespace) == namespace for o in objects.values())
    assert objects["ResourceQuota"]["spec"]["hard"] == {"limits.cpu": "2", "limits.memory": "768Mi"}
    ingress = objects["NetworkPolicy"]["spec"]["ingress"]
    assert ingress == [
        {"from": [{"podSelector": {"matchLabels": {"fogline.io/companion": "press-anomaly"}}}]}
    ]
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True}
    (container,) = pod["containers"]
    assert container["image"] == "registry.example/acme/press:1.2.0"
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
