"""Devices and (later) their desired and reported state, artifacts and rollouts."""
