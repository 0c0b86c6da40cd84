"""The NATS backbone: the embedded nats-server, subjects, streams, and the MQTT bridge."""
