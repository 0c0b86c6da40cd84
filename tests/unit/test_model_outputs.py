"""A model's outputs checked value by value and packed into messages (models/outputs.py): no
value converted, none lost with another, every message under its byte budget."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from fogline.models.mappings import ResolvedAsset
from fogline.models.outputs import (
    OUTPUT_CHUNK,
    OutputPlanner,
    allowed_timestamps,
    load_answer,
    value_problem,
    value_text,
)
from fogline.sdk.contract import Output, ScoreRequest
from fogline.sdk.model import Model
from fogline.sdk.serve import ModelHost

T0 = 1_800_000_000_000
MAPPINGS = {
    a: ResolvedAsset(a, "asset", {"x": "temperature"}, {"score": "score", "label": "level"})
    for a in ("s1", "s2")
}
AS_STRING = {"score": False, "label": True}


def planner(budget: int = 256 * 1024) -> OutputPlanner:
    return OutputPlanner(AS_STRING, budget)


def written(plan: Any) -> list[dict[str, Any]]:
    """Every reading the plan would publish, in order."""
    return [r for chunk in plan.chunks for r in orjson.loads(chunk.payload())["readings"]]


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (math.nan, "not-finite"),
        (math.inf, "not-finite"),
        (-math.inf, "not-finite"),
        ("1.5", "wrong-type"),  # text is never read as a number
        ({"a": 1}, "wrong-type"),
        ([1, 2], "wrong-type"),
        (None, "wrong-type"),
        (2**64, "too-large"),
        (1.5, None),
        (-(2**63), None),
        (True, None),  # a numeric column may be bound to a bool telemetry
    ],
)
def test_a_numeric_column_takes_finite_numbers_and_booleans(value: Any, code: str | None) -> None:
    found = value_problem(value, as_string=False)
    assert (found[0] if found else None) == code


@pytest.mark.parametrize(
    ("value", "code"),
    [
        (5, "wrong-type"),  # never str(5)
        (True, "wrong-type"),
        (None, "wrong-type"),  # never the text 'None'
        ({"a": 1}, "wrong-type"),  # never a Python repr
        ("a\x00b", "wrong-type"),
        ("x" * 4097, "too-large"),
        ("x" * 4096, None),
        ("", None),
    ],
)
def test_a_read_as_string_column_takes_text_only(value: Any, code: str | None) -> None:
    found = value_problem(value, as_string=True)
    assert (found[0] if found else None) == code


def test_a_refused_value_is_kept_as_it_was() -> None:
    assert value_text(math.nan) == "NaN"
    assert value_text(math.inf) == "Infinity"
    assert value_text(-math.inf) == "-Infinity"
    assert value_text({"a": math.nan, "b": [1, "x"]}) == '{"a": NaN, "b": [1, "x"]}'
    assert value_text("1.5") == '"1.5"'  # the text, not the number
    assert value_text(None) == "null"
    clipped = value_text("é" * 5_000_000)
    assert clipped.startswith('"éé') and clipped.endswith("…") and len(clipped) == 2049


def test_an_answer_with_nan_is_read_with_the_nan() -> None:
    answer = load_answer(b'{"outputs": [{"values": {"a": NaN, "b": -Infinity, "c": 1}}]}')
    values = answer["outputs"][0]["values"]
    assert math.isnan(values["a"]) and values["b"] == -math.inf and values["c"] == 1
    assert load_answer(b'{"outputs": []}') == {"outputs": []}
    for bad in (b"not json", b"[" * 100_000, b'{"a": nan}'):
        with pytest.raises(ValueError):
            load_answer(bad)


def test_the_sdk_sends_nan_as_nan_not_null() -> None:
    host = ModelHost(Model())
    request = ScoreRequest("r1", [])
    outputs = [Output("s1", T0, {"score": math.nan, "label": None, "n": 1.5})]
    answer = load_answer(host.answer(request, outputs))
    values = answer["outputs"][0]["values"]
    assert math.isnan(values["score"]) and values["label"] is None and values["n"] == 1.5
    plain = host.answer(request, [Output("s1", T0, {"score": 1.0})])  # strict JSON as before
    assert orjson.loads(plain)["outputs"] == [{"asset": "s1", "ts": T0, "values": {"score": 1.0}}]


def test_one_bad_value_refuses_that_value_only() -> None:
    allowed = {"s1": {T0, T0 + 1}, "s2": {T0}}
    answer = {
        "outputs": [
            {"asset": "s1", "ts": T0, "values": {"score": math.nan, "label": "ok"}},
            {"asset": "s1", "ts": T0 + 1, "values": {"score": 2.5, "label": None}},
            {"asset": "s2", "ts": T0, "values": {"score": {"deep": 1}, "other": 1, "label": "b"}},
            {"asset": "s3", "ts": T0, "values": {"score": 1.0}},
            "not an output",
        ]
    }
    plan = planner().plan(answer, allowed, MAPPINGS)
    assert written(plan) == [
        {"asset": "s1", "ts": T0, "values": {"level": "ok"}},
        {"asset": "s1", "ts": T0 + 1, "values": {"score": 2.5}},
        {"asset": "s2", "ts": T0, "values": {"level": "b"}},
    ]
    refused = [(r.reason_code, r.asset, r.ts, r.column, r.value) for r in plan.refused]
    assert refused == [
        ("not-finite", "s1", T0, "score", "NaN"),
        ("wrong-type", "s1", T0 + 1, "label", "null"),
        ("wrong-type", "s2", T0, "score", '{"deep": 1}'),
        ("unmapped", "s2", T0, "other", "1"),
        ("unmapped", "s3", T0, None, '{"score": 1.0}'),
        ("malformed", None, None, None, '"not an output"'),
    ]
    assert plan.refused[0].telemetry == "score"


def test_an_answer_without_outputs_is_malformed() -> None:
    for answer in ({"result": []}, [], None, {"outputs": {"a": 1}}):
        plan = planner().plan(answer, {"s1": {T0}}, MAPPINGS)
        assert plan.chunks == []
        [refusal] = plan.refused
        assert (refusal.reason_code, refusal.asset) == ("malformed", None)


def test_outputs_are_written_only_at_the_times_of_the_requests_readings() -> None:
    readings = [
        {"asset": "s1", "ts": T0, "values": {}},
        {"asset": "s2", "ts": T0 + 5, "values": {}},
        {"asset": "s2", "ts": T0 + 6, "values": {}},
    ]
    allowed = allowed_timestamps(readings)
    assert allowed == {"s1": {T0}, "s2": {T0 + 5, T0 + 6}}
    answer = {
        "outputs": [
            {"asset": "s1", "values": {"score": 1}},  # no ts, one reading: its time
            {"asset": "s1", "ts": T0 - 86_400_000, "values": {"score": 2}},  # a day back
            {"asset": "s1", "ts": T0 + 5, "values": {"score": 3}},  # another asset's time
            {"asset": "s2", "values": {"score": 4}},  # no ts, two readings: which?
            {"asset": "s2", "ts": float(T0 + 5), "values": {"score": 5}},
            {"asset": "s2", "ts": T0 + 6, "values": {"score": 6}},
        ]
    }
    plan = planner().plan(answer, allowed, MAPPINGS)
    assert [(r["asset"], r["ts"], r["values"]) for r in written(plan)] == [
        ("s1", T0, {"score": 1}),
        ("s2", T0 + 6, {"score": 6}),
    ]
    assert [(r.reason_code, r.asset, r.ts) for r in plan.refused] == [
        ("bad-timestamp", "s1", T0 - 86_400_000),
        ("bad-timestamp", "s1", T0 + 5),
        ("bad-timestamp", "s2", None),
        ("bad-timestamp", "s2", None),
    ]
    assert "not known" in plan.refused[2].reason
    # A request without readings of an asset lets no output of it through.
    plan = planner().plan({"outputs": [{"asset": "s1", "values": {"score": 1}}]}, {}, MAPPINGS)
    assert plan.chunks == [] and plan.refused[0].reason_code == "bad-timestamp"


def test_every_valid_value_is_packed_under_the_budget() -> None:
    """300 valid values of 4,000 characters: all written, in messages under the budget."""
    budget = 256 * 1024
    allowed = {"s1": {T0 + i for i in range(300)}}
    outputs = [
        {"asset": "s1", "ts": T0 + i, "values": {"label": f"{i:04d}" + "x" * 3996}}
        for i in range(300)
    ]
    plan = planner(budget).plan({"outputs": outputs}, allowed, MAPPINGS)
    assert plan.refused == []
    assert [r["ts"] for r in written(plan)] == [T0 + i for i in range(300)]
    sizes = [len(c.payload()) for c in plan.chunks]
    assert sizes == [c.size for c in plan.chunks]  # measured while built, exactly
    assert all(size <= budget for size in sizes)
    assert len(plan.chunks) == 5  # about 63 values of 4 KB in 256 KiB


def test_a_value_too_large_for_any_message_is_refused_alone() -> None:
    budget = 2000
    allowed = {"s1": {T0, T0 + 1}}
    answer = {
        "outputs": [
            {"asset": "s1", "ts": T0, "values": {"score": 1.0, "label": "y" * 3000}},
            {"asset": "s1", "ts": T0 + 1, "values": {"score": 2.0, "label": "z" * 1925}},
        ]
    }
    plan = planner(budget).plan(answer, allowed, MAPPINGS)
    # The second output is too large as one reading: its values go as one reading each.
    assert [(r["ts"], r["values"]) for r in written(plan)] == [
        (T0, {"score": 1.0}),
        (T0 + 1, {"score": 2.0}),
        (T0 + 1, {"level": "z" * 1925}),
    ]
    [refusal] = plan.refused
    assert (refusal.reason_code, refusal.ts, refusal.column) == ("too-large", T0, "label")
    assert f"at most {budget}" in refusal.reason
    assert all(len(c.payload()) <= budget for c in plan.chunks)


def test_a_message_holds_at_most_output_chunk_readings() -> None:
    count = 2 * OUTPUT_CHUNK + 500
    allowed = {"s1": {T0 + i for i in range(count)}}
    outputs = [{"asset": "s1", "ts": T0 + i, "values": {"score": i}} for i in range(count)]
    plan = planner(10 * 1024 * 1024).plan({"outputs": outputs}, allowed, MAPPINGS)
    assert [len(c.pieces) for c in plan.chunks] == [OUTPUT_CHUNK, OUTPUT_CHUNK, 500]
    assert sum(c.values for c in plan.chunks) == count


def test_text_that_is_not_unicode_is_refused_alone() -> None:
    answer = load_answer(
        b'{"outputs": [{"asset": "s1", "values": {"label": "\\ud800", "score": 1}}]}'
    )
    plan = planner().plan(answer, {"s1": {T0}}, MAPPINGS)
    assert [r["values"] for r in written(plan)] == [{"score": 1}]
    assert [(r.reason_code, r.column) for r in plan.refused] == [("wrong-type", "label")]


def test_names_a_model_makes_up_are_kept_storable() -> None:
    answer = {"outputs": [{"asset": "a\x00" + "b" * 500, "values": {"score": 1}}]}
    [refusal] = planner().plan(answer, {}, MAPPINGS).refused
    assert refusal.reason_code == "unmapped"
    assert refusal.asset == "a" + "b" * 63
