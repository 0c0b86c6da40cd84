"""The SDK's model server, in process: the score/learn/health contract of docs/models.md."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.testclient import TestClient

from fogline.sdk import FunctionModel, Model, Reading
from fogline.sdk.http import build_app
from fogline.sdk.serve import ModelHost, ServerSettings


class Counter(Model):
    """Scores each reading against what it has learned so far."""

    def __init__(self) -> None:
        self.seen: list[float] = []
        self.broken = False

    def score(self, readings: list[Reading]) -> list[Any]:
        if any(r.values["x"] < 0 for r in readings):
            raise ValueError("negative x")
        return [{"above": r.values["x"] > max(self.seen, default=0.0)} for r in readings]

    def learn(self, readings: list[Reading], labels: list[Any] | None = None) -> None:
        self.seen += [r.values["x"] for r in readings]

    def health(self) -> bool | dict[str, Any]:
        return {"status": "degraded", "why": "flag"} if self.broken else True


def client(model: Model) -> TestClient:
    return TestClient(build_app(ModelHost(model), ServerSettings()))


def request(*xs: float) -> dict[str, Any]:
    readings = [{"asset": "a1", "ts": 1000 + i, "values": {"x": x}} for i, x in enumerate(xs)]
    return {"request_id": "r1", "readings": readings}


def test_score_learn_and_health_follow_the_contract() -> None:
    model = Counter()
    with client(model) as http:
        r = http.post("/score", json=request(1.0, 2.0))
        assert r.status_code == 200
        assert r.json() == {
            "request_id": "r1",
            "outputs": [
                {"asset": "a1", "ts": 1000, "values": {"above": True}},
                {"asset": "a1", "ts": 1001, "values": {"above": True}},
            ],
        }
        assert http.post("/learn", json=request(5.0)).json() == {"learned": 1}
        assert http.post("/score", json=request(3.0)).json()["outputs"][0]["values"] == {
            "above": False
        }
        health = http.get("/health")
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "scored": 3,
            "failures": 0,
            "in_flight": 0,
            "concurrency": 1,
        }

        failed = http.post("/score", json=request(-1.0))
        assert failed.status_code == 500
        assert failed.headers["content-type"] == "application/problem+json"
        assert "negative x" in failed.json()["detail"]
        bad = http.post("/score", content=b'{"readings": [{"asset": "a1"}]}')
        assert bad.status_code == 400 and "values" in bad.json()["detail"]
        model.broken = True
        sick = http.get("/health")
        assert sick.status_code == 503
        assert sick.json()["status"] == "degraded" and sick.json()["why"] == "flag"
        assert sick.json()["failures"] == 1


def test_a_function_model_without_learn_says_so() -> None:
    doubled = FunctionModel(lambda readings: [{"y": r.values["x"] * 2} for r in readings])
    with client(doubled) as http:
        assert http.post("/score", json=request(4.0)).json()["outputs"][0]["values"] == {"y": 8.0}
        r = http.post("/learn", json=request(4.0))
        assert r.status_code == 501 and "does not learn" in r.json()["detail"]


async def test_a_call_beyond_the_workers_is_refused_as_busy_not_queued() -> None:
    """The companion must never have a call wait inside the model (it would time out there
    and be sent again while still queued): the SDK answers 429 at once instead."""
    import asyncio
    import threading

    import httpx

    from tests.conftest import async_wait_for

    release = threading.Event()

    def slow(readings: list[Reading]) -> list[Any]:
        release.wait(10)
        return [{"y": 1} for _ in readings]

    host = ModelHost(FunctionModel(slow), concurrency=2)
    transport = httpx.ASGITransport(app=build_app(host, ServerSettings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://model") as http:
        first = [asyncio.create_task(http.post("/score", json=request(1.0))) for _ in range(2)]
        await async_wait_for(lambda: host.in_flight == 2, 10, "both workers busy")
        refused = await http.post("/score", json=request(2.0))
        assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
        health = (await http.get("/health")).json()
        assert (health["in_flight"], health["concurrency"]) == (2, 2)
        release.set()
        assert [r.status_code for r in await asyncio.gather(*first)] == [200, 200]
        again = await http.post("/score", json=request(3.0))
        assert again.status_code == 200
    assert (host.scored, host.busy_refusals, host.in_flight) == (3, 1, 0)


def test_one_result_short_is_an_error_not_a_shift() -> None:
    """Plain value dicts are matched to readings by position: one missing would put every
    later output on the wrong reading, so the call fails (and the companion dead-letters it)."""
    import pytest

    from fogline.sdk.contract import Output, outputs_of

    readings = [Reading("a1", 1000 + i, {"x": 1.0}) for i in range(3)]
    with pytest.raises(TypeError, match="2 results for 3 readings"):
        outputs_of(readings, [{"y": 1}, {"y": 2}])
    assert outputs_of(readings, []) == []
    chosen = [{"asset": "a1", "ts": 1001, "values": {"y": 2}}]
    assert outputs_of(readings, chosen) == [Output("a1", 1001, {"y": 2})]
    with client(FunctionModel(lambda rs: [{"y": 1}] * (len(rs) - 1))) as http:
        r = http.post("/score", json=request(1.0, 2.0))
        assert r.status_code == 500 and "1 results for 2 readings" in r.json()["detail"]


def test_an_int_too_wide_for_orjson_is_still_answered_for_the_platform_to_refuse_alone() -> None:
    big = 10**30
    with client(FunctionModel(lambda rs: [{"y": big, "z": 1.5} for _ in rs])) as http:
        r = http.post("/score", json=request(1.0))
        assert r.status_code == 200
        assert r.json()["outputs"][0]["values"] == {"y": big, "z": 1.5}


def test_parameters_come_from_the_platform_over_the_models_own_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fogline.sdk import parameters

    monkeypatch.delenv("FOGLINE_MODEL_PARAMETERS", raising=False)
    assert parameters(threshold=3.0) == {"threshold": 3.0}
    monkeypatch.setenv("FOGLINE_MODEL_PARAMETERS", '{"threshold": 4.5, "window": 60}')
    assert parameters(threshold=3.0) == {"threshold": 4.5, "window": 60}
    monkeypatch.setenv("FOGLINE_MODEL_PARAMETERS", "[1, 2]")
    with pytest.raises(SystemExit, match="JSON object"):
        parameters()
