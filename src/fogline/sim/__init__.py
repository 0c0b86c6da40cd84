"""The virtual fleet: realistic device signals, faults and network behaviour, over real MQTT."""
