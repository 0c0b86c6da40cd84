"""Telemetry ingest: validation, the historian, and real-time and historical queries."""
