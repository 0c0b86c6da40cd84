"""Errors of the bus context."""

from __future__ import annotations

from nats.errors import Error as NatsError

from fogline.domain.errors import ConfigurationError, Unavailable

# What a Bus call raises when NATS refuses or is away: contexts catch this, never nats' own.
BusError = NatsError


class PortInUse(ConfigurationError):
    """A port Fogline's own server should listen on is taken."""


class BrokerUnavailable(Unavailable):
    """NATS, or the bridged MQTT broker, cannot be reached or did not start."""


class BrokerConfigInvalid(ConfigurationError):
    """A broker URL or setting cannot be used."""
