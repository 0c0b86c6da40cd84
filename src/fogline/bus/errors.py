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


class PublishNotStored(BrokerUnavailable):
    """JetStream did not store the message: it refused it, or never got it."""


class PublishFateUnknown(BrokerUnavailable):
    """No answer came before the deadline: the message may or may not be stored. A publish
    again under the same message id, within the stream's duplicate window, stores it once."""
