"""Devices: the connected things that send telemetry for assets, and who they are to the broker."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class HardwareProfile:
    cpu: str | None = None
    cpu_cores: int | None = None
    memory_mb: int | None = None
    accelerator: str | None = None
    connectivity: str | None = None
    power_source: str | None = None


@dataclass(frozen=True)
class Device:
    tenant: str
    id: str
    name: str
    hardware: HardwareProfile = field(default_factory=HardwareProfile)
    firmware: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def username(self) -> str:
        """The device's broker user name: unique across tenants, since ids are dot-free slugs."""
        return device_username(self.tenant, self.id)


def device_username(tenant: str, device: str) -> str:
    return f"{tenant}.{device}"
