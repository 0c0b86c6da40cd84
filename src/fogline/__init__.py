"""Fogline: the whole life of machine-learning models on IoT fleets."""

__version__ = "0.1.0"
