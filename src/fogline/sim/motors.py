"""An induction motor as its sensors see it.

The motor cycles between running (at a load that wanders) and stopped. Its winding temperature
follows a first-order thermal model towards ambient plus a load-dependent rise; vibration,
current and sound level follow load, with sensor noise. Faults change the physics, not the
labels: a worn bearing raises vibration and sound, a cooling fault raises the temperature rise,
a phase imbalance raises and shakes the current. Each fault's interval is kept as ground truth,
so models can later be scored against it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import Enum

AMBIENT_C = 24.0
RATED_CURRENT_A = 12.0
THERMAL_TAU_S = 90.0


class Fault(Enum):
    BEARING_WEAR = "bearing-wear"
    COOLING_FAILURE = "cooling-failure"
    PHASE_IMBALANCE = "phase-imbalance"


@dataclass(frozen=True)
class FaultEpisode:
    asset: str
    fault: Fault
    start_ms: int
    end_ms: int


MOTOR_TELEMETRY = [
    {"name": "vibration", "dtype": "float", "unit": "mm/s", "min": 0, "max": 50},
    {"name": "temperature", "dtype": "float", "unit": "degC", "min": -40, "max": 200},
    {"name": "current", "dtype": "float", "unit": "A", "min": 0, "max": 100},
    {"name": "sound_level", "dtype": "float", "unit": "dB", "min": 0, "max": 140},
    # What the library's models write back (fogline library import ...).
    {"name": "temperature_score", "dtype": "float", "unit": "sigma", "min": 0},
    {"name": "temperature_warning", "dtype": "string"},
    {"name": "anomaly_score", "dtype": "float"},
    {"name": "anomaly_warning", "dtype": "string"},
    {"name": "failure_probability", "dtype": "float", "min": 0, "max": 1},
    {"name": "failure_warning", "dtype": "string"},
]
MOTOR_ATTRIBUTES = [
    {"name": "rated_power_kw", "dtype": "float", "required": True},
    {"name": "manufacturer", "dtype": "string", "default": "Fogline Motors"},
]


@dataclass
class Motor:
    asset: str
    rng: random.Random
    fault_rate_per_s: float = 1 / 1800
    running: bool = True
    load: float = 0.8
    temperature: float = AMBIENT_C + 20
    phase_left_s: float = 0.0
    fault: Fault | None = None
    fault_left_s: float = 0.0
    fault_started_ms: int = 0
    episodes: list[FaultEpisode] = field(default_factory=list)

    def start_fault(self, fault: Fault, now_ms: int, duration_s: float) -> None:
        self.fault = fault
        self.fault_left_s = duration_s
        self.fault_started_ms = now_ms

    def step(self, dt: float, now_ms: int) -> dict[str, float]:
        """Advance by dt seconds and return one reading of the four sensors."""
        rng = self.rng
        self._advance_duty_cycle(dt)
        self._advance_fault(dt, now_ms)
        load = self.load if self.running else 0.0
        rise = 45.0 * load + (25.0 if self.fault is Fault.COOLING_FAILURE and self.running else 0)
        target = AMBIENT_C + rise
        self.temperature += (target - self.temperature) * (1 - math.exp(-dt / THERMAL_TAU_S))
        vibration = (0.15 + 2.2 * load) * (1 + rng.gauss(0, 0.05))
        sound = 45.0 + (30.0 + 6.0 * load if self.running else 0.0) + rng.gauss(0, 0.8)
        current = RATED_CURRENT_A * load * (1 + rng.gauss(0, 0.02)) if self.running else 0.0
        if self.fault is Fault.BEARING_WEAR and self.running:
            vibration += 4.0 + abs(rng.gauss(0, 1.2))
            sound += 7.0
        if self.fault is Fault.PHASE_IMBALANCE and self.running:
            current *= 1.25 + abs(rng.gauss(0, 0.08))
            vibration += 1.0
        return {
            "vibration": round(max(vibration, 0.0), 3),
            "temperature": round(self.temperature + rng.gauss(0, 0.2), 2),
            "current": round(max(current, 0.0), 3),
            "sound_level": round(max(sound, 0.0), 2),
        }

    def _advance_duty_cycle(self, dt: float) -> None:
        self.phase_left_s -= dt
        if self.phase_left_s <= 0:
            self.running = not self.running or self.rng.random() < 0.3
            self.phase_left_s = (
                self.rng.uniform(60, 300) if self.running else self.rng.uniform(20, 90)
            )
            self.load = self.rng.uniform(0.55, 1.0)
        elif self.running:
            self.load = min(1.0, max(0.4, self.load + self.rng.gauss(0, 0.01)))

    def _advance_fault(self, dt: float, now_ms: int) -> None:
        if self.fault is not None:
            self.fault_left_s -= dt
            if self.fault_left_s <= 0:
                self.episodes.append(
                    FaultEpisode(self.asset, self.fault, self.fault_started_ms, now_ms)
                )
                self.fault = None
        elif self.rng.random() < self.fault_rate_per_s * dt:
            fault = self.rng.choice(list(Fault))
            self.start_fault(fault, now_ms, self.rng.uniform(60, 300))
