"""Names on the bus. MQTT topic `fogline/<tenant>/devices/<device>/telemetry` is NATS subject
`fogline.<tenant>.devices.<device>.telemetry` (nats-server's MQTT listener swaps `/` and `.`).

The root token is `fogline`; it can be changed so that several Fogline installations (or test
runs) share one NATS server without their streams overlapping.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from fogline.bus.errors import BrokerConfigInvalid
from fogline.domain.errors import Problem
from fogline.domain.ids import is_slug
from fogline.domain.telemetry import SourceKind

# The two kinds of source whose messages the telemetry stream holds: devices and the data
# companions that write model outputs back as telemetry.
_SOURCES = {
    ("devices", "telemetry"): SourceKind.DEVICE,
    ("models", "outputs"): SourceKind.MODEL,
}
# A model version as one subject token: a version (semver) never holds '_', and a token may not
# hold '.', so '.' is written '_' and the token reads back unambiguously.
_VERSION_TOKEN = re.compile(r"[0-9A-Za-z_+-]{1,64}")


def version_token(version: str) -> str:
    return version.replace(".", "_")


@functools.lru_cache(maxsize=65536)
def _parse_source(root: str, subject: str) -> tuple[SourceKind, str, str] | None:
    # Cached: the historian parses the subject of every message, and sources are few.
    parts = subject.split(".")
    version = None
    if len(parts) == 6:  # a model's outputs, with the version as the last token
        if parts[2] != "models" or not _VERSION_TOKEN.fullmatch(parts[5]):
            return None
        version = parts.pop().replace("_", ".")
    if len(parts) != 5 or parts[0] != root or not is_slug(parts[1]) or not is_slug(parts[3]):
        return None
    kind = _SOURCES.get((parts[2], parts[4]))
    if kind is None:
        return None
    return kind, parts[1], parts[3] if version is None else f"{parts[3]}@{version}"


@dataclass(frozen=True)
class Subjects:
    root: str = "fogline"

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9_]*", self.root):
            raise BrokerConfigInvalid(
                "invalid subject root",
                [Problem("subject_root", f"{self.root!r}: lowercase letters, digits and '_'")],
            )

    @property
    def telemetry_stream(self) -> str:
        return f"{self.root.upper()}_TELEMETRY"

    @property
    def telemetry_filter(self) -> str:
        return f"{self.root}.*.devices.*.telemetry"

    @property
    def model_outputs_filter(self) -> str:
        return f"{self.root}.*.models.*.outputs.*"

    @property
    def stream_subjects(self) -> list[str]:
        """Everything the telemetry stream (and so the historian) takes in. The subject of
        model outputs without a version (before outputs carried it) is still taken, so that
        what an older platform left in the hot store is stored after an upgrade."""
        return [self.telemetry_filter, self.model_outputs_filter, self._unversioned_outputs]

    @property
    def _unversioned_outputs(self) -> str:
        return f"{self.root}.*.models.*.outputs"

    def model_outputs(self, tenant: str, model: str, version: str) -> str:
        """Where a model version's data companion publishes its outputs; only the platform
        may. The version is part of the subject, so the outputs of two versions are told
        apart wherever they are stored."""
        return f"{self.root}.{tenant}.models.{model}.outputs.{version_token(version)}"

    def telemetry(self, tenant: str, device: str) -> str:
        return f"{self.root}.{tenant}.devices.{device}.telemetry"

    def tenant_telemetry(self, tenant: str) -> str:
        """Every device telemetry subject of one tenant: what its NATS account exports."""
        return f"{self.root}.{tenant}.devices.*.telemetry"

    def device_scope(self, tenant: str, device: str) -> str:
        """Everything a device may publish and subscribe to: its own subtree, nothing else."""
        return f"{self.root}.{tenant}.devices.{device}.>"

    def live(self, tenant: str, asset: str) -> str:
        return f"{self.root}.{tenant}.assets.{asset}.live"

    @property
    def events_stream(self) -> str:
        return f"{self.root.upper()}_EVENTS"

    def event(self, tenant: str, event_type: str) -> str:
        """Where a platform event of `event_type` (dotted, e.g. model.transitioned) goes."""
        return f"{self.root}._platform.events.{tenant}.{event_type}"

    def events_filter(self, tenant: str | None = None, event_type: str | None = None) -> str:
        """Events of one tenant and/or one type; every event with neither."""
        return f"{self.root}._platform.events.{tenant or '*'}.{event_type or '>'}"

    def kv_bucket(self, name: str) -> str:
        """A JetStream KV bucket of this installation (the root keeps installations apart)."""
        return f"{self.root.upper()}_{name.upper()}"

    @property
    def historian_stats(self) -> str:
        """Where the historian process reports its counters to the platform, every second."""
        return f"{self.root}._platform.historian.stats"

    def mqtt_topic(self, subject: str) -> str:
        return subject.replace(".", "/")

    @property
    def mqtt_telemetry_filter(self) -> str:
        return f"{self.root}/+/devices/+/telemetry"

    def parse_telemetry(self, subject: str) -> tuple[str, str] | None:
        """(tenant, device) of a device telemetry subject, or None when it is not one."""
        parsed = _parse_source(self.root, subject)
        return (parsed[1], parsed[2]) if parsed and parsed[0] is SourceKind.DEVICE else None

    def parse_source(self, subject: str) -> tuple[SourceKind, str, str] | None:
        """(kind, tenant, id) of a stream subject; None when it is not one of the stream's."""
        return _parse_source(self.root, subject)

    def subject_from_topic(self, topic: str) -> str | None:
        """The NATS subject of a bridged MQTT topic, or None for a topic that has no place here."""
        if any(c in topic for c in ".*> ") or topic.startswith("/") or topic.endswith("/"):
            return None
        return topic.replace("/", ".")
