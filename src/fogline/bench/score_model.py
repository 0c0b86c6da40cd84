"""The model `fogline bench e2e` deploys: a stateless REAL_TIME model that scores each reading
of the bench fleet (a little arithmetic over v1..v4), answering with the reading's own
timestamp so that the output's age when committed is the whole path's latency."""

from __future__ import annotations

from typing import Any

from fogline.sdk import Reading, serve


def score(readings: list[Reading]) -> list[dict[str, Any]]:
    return [
        {"score": r.values["v1"] * r.values["v2"] + r.values["v3"] - r.values["v4"]}
        for r in readings
    ]


if __name__ == "__main__":
    serve(score=score)
