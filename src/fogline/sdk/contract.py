"""The wire contract between a data companion and a model server, in one place.

Score request (HTTP POST to the manifest's `scoreEndpoint`, or an AMQP message on the score
queue):

    {"request_id": "…", "model": "name", "version": "1.0.0", "trigger": "REAL_TIME",
     "stateful": true, "window": {"start": ms, "end": ms} | null,
     "callback_url": "http://…" | null,
     "readings": [{"asset": "m1", "ts": 1700000000000, "values": {"temperature": 71.5}}]}

Values are keyed by the model's input column names. The answer (the HTTP response, the AMQP
reply, or the body POSTed to `callback_url` by an asynchronous model) is

    {"request_id": "…", "outputs": [{"asset": "m1", "ts": …, "values": {"score": 0.2}}]}

with values keyed by output column names. An asynchronous model answers the score call with
202 and sends the outputs to the callback URL later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Reading:
    asset: str
    ts: int
    values: dict[str, Any]


@dataclass(frozen=True)
class Output:
    asset: str
    ts: int
    values: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"asset": self.asset, "ts": self.ts, "values": self.values}


@dataclass(frozen=True)
class ScoreRequest:
    request_id: str
    readings: list[Reading]
    model: str = ""
    version: str = ""
    trigger: str = "REAL_TIME"
    stateful: bool = False
    window: dict[str, int] | None = None
    callback_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, body: Any) -> ScoreRequest:
        if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
            raise ValueError("a score request is an object with a 'readings' list")
        readings = []
        for i, r in enumerate(body["readings"]):
            if not isinstance(r, dict) or not isinstance(r.get("values"), dict):
                raise ValueError(f"readings[{i}] needs 'asset', 'ts' and a 'values' object")
            readings.append(Reading(str(r.get("asset", "")), int(r.get("ts", 0)), r["values"]))
        return cls(
            request_id=str(body.get("request_id", "")),
            readings=readings,
            model=str(body.get("model", "")),
            version=str(body.get("version", "")),
            trigger=str(body.get("trigger", "REAL_TIME")),
            stateful=bool(body.get("stateful", False)),
            window=body.get("window"),
            callback_url=body.get("callback_url"),
        )


def outputs_of(readings: list[Reading], result: Any) -> list[Output]:
    """What a `score` returned, as outputs. Accepted: a list of Output, a list of
    `{"asset", "ts", "values"}` dicts, or a list of plain value dicts aligned with the readings
    (the output then belongs to the reading at the same position)."""
    if result is None:
        return []
    if not isinstance(result, list):
        raise TypeError("score must return a list")
    plain = [
        item
        for item in result
        if isinstance(item, dict) and not ("values" in item and "asset" in item)
    ]
    if plain and len(result) != len(readings):
        # Matched by position: one result short would move every later output onto the
        # wrong reading, silently.
        raise TypeError(
            f"score returned {len(result)} results for {len(readings)} readings; plain value "
            "dicts are matched to the readings by position, so there must be one per reading "
            "(or return outputs with 'asset', 'ts' and 'values', or [] for none)"
        )
    outputs: list[Output] = []
    for i, item in enumerate(result):
        if isinstance(item, Output):
            outputs.append(item)
        elif isinstance(item, dict) and "values" in item and "asset" in item:
            outputs.append(Output(str(item["asset"]), int(item["ts"]), dict(item["values"])))
        elif isinstance(item, dict):
            if i >= len(readings):
                raise TypeError("score returned more value dicts than it got readings")
            outputs.append(Output(readings[i].asset, readings[i].ts, item))
        else:
            raise TypeError(f"score returned {type(item).__name__} at {i}; expected a dict")
    return outputs
