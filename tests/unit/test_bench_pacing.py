"""`fogline bench ingest` paces its latency phase at a share of what it measured, so the
figure means the same on a slower or a faster machine, and says whether the p99 held."""

from fogline.bench.ingest import P99_TARGET_MS, p99_verdict, paced_rate


def test_the_paced_rate_is_80_percent_of_the_measured_max_unless_one_is_given() -> None:
    assert paced_rate(0.0, 70_000.0) == (56_000.0, "80% of the max phase")
    assert paced_rate(0.0, 9_001.0) == (7_201.0, "80% of the max phase")
    assert paced_rate(12_000.0, 70_000.0) == (12_000.0, "--rate")
    assert paced_rate(0.0, 0.0)[0] == 1.0  # nothing committed: still a rate, not zero


def test_the_verdict_says_whether_the_p99_held() -> None:
    assert P99_TARGET_MS == 250.0
    assert p99_verdict(189.1).endswith(": held")
    assert p99_verdict(250.0).endswith(": held")
    assert p99_verdict(251.0).endswith("NOT held")
    assert "unknown" in p99_verdict(None)
