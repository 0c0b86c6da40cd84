"""Errors of the bus context."""

from __future__ import annotations

from fogline.domain.errors import ConfigurationError, Unavailable


class PortInUse(ConfigurationError):
    """A port Fogline's own server should listen on is taken."""


class BrokerUnavailable(Unavailable):
    """NATS, or the bridged MQTT broker, cannot be reached or did not start."""


class BrokerConfigInvalid(ConfigurationError):
    """A broker URL or setting cannot be used."""
