"""Benchmarks behind `fogline bench`: they print figures and compare against a baseline measured
in the same run; they are never timed assertions in tests."""
