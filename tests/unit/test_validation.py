"""Telemetry validation: each refusal reason, and the valid readings around a bad one kept."""

import json

from fogline.domain.assets import AssetType, DType, TelemetryDefinition
from fogline.domain.telemetry import DeadLetterReason as R
from fogline.ingest.validation import IngestLimits, MessageContext, validate_message

NOW = 1_800_000_000_000
MOTOR = AssetType(
    "acme",
    "motor",
    "Motor",
    None,
    (
        TelemetryDefinition("temperature", DType.FLOAT, min=-40, max=200),
        TelemetryDefinition("rpm", DType.INT, min=0),
        TelemetryDefinition("running", DType.BOOL),
        TelemetryDefinition("state", DType.STRING),
    ),
)


class Lookup:
    def device_known(self, tenant: str, device: str) -> bool:
        return (tenant, device) == ("acme", "d1")

    def asset_type_of(self, tenant: str, asset: str) -> AssetType | None:
        return MOTOR if (tenant, asset) == ("acme", "m1") else None


def run(payload: object, device: str = "d1", limits: IngestLimits | None = None):  # type: ignore[no-untyped-def]
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return validate_message(
        MessageContext("acme", device, NOW, 7), raw, Lookup(), limits or IngestLimits()
    )


def test_one_reading_with_every_dtype() -> None:
    out = run(
        {
            "asset": "m1",
            "ts": NOW - 5,
            "values": {"temperature": 21.5, "rpm": 1450, "running": True, "state": "run"},
        }
    )
    assert out.dead_letters == []
    assert len(out.readings) == 1
    r = out.readings[0]
    assert (r.asset, r.ts) == ("m1", NOW - 5)
    assert r.values == {"temperature": 21.5, "rpm": 1450, "running": True, "state": "run"}
    assert out.value_count == 4


def test_server_time_when_no_timestamp() -> None:
    assert run({"asset": "m1", "values": {"rpm": 1}}).readings[0].ts == NOW


def test_batch_shapes() -> None:
    reading = {"asset": "m1", "values": {"rpm": 1}}
    assert len(run([reading, reading]).readings) == 2
    assert len(run({"readings": [reading]}).readings) == 1


def test_valid_readings_around_bad_ones_are_all_kept() -> None:
    out = run(
        [
            {"asset": "m1", "ts": NOW - 3, "values": {"temperature": 20.0, "rpm": 10}},
            {"asset": "zz", "values": {"rpm": 1}},
            {
                "asset": "m1",
                "ts": NOW - 2,
                "values": {"temperature": "hot", "rpm": -1, "nope": 1, "state": "ok"},
            },
            "not a reading",
            {"asset": "m1", "ts": "yesterday", "values": {"rpm": 1}},
            {"asset": "m1", "ts": NOW - 1, "values": {"temperature": 250.0}},
            {"asset": "m1", "values": {}},
            {"values": {"rpm": 1}},
            {"asset": "m1", "ts": NOW, "values": {"running": 1}},
        ]
    )
    assert [(r.ts, r.values) for r in out.readings] == [
        (NOW - 3, {"temperature": 20.0, "rpm": 10}),
        (NOW - 2, {"state": "ok"}),
    ]
    by_reason = sorted((d.item, d.reason_code.value, d.telemetry or "") for d in out.dead_letters)
    assert by_reason == sorted(
        [
            (1, R.UNKNOWN_ASSET.value, ""),
            (2, R.WRONG_TYPE.value, "temperature"),
            (2, R.OUT_OF_RANGE.value, "rpm"),
            (2, R.UNKNOWN_TELEMETRY.value, "nope"),
            (3, R.BAD_SHAPE.value, ""),
            (4, R.BAD_TIMESTAMP.value, ""),
            (5, R.OUT_OF_RANGE.value, "temperature"),
            (6, R.BAD_SHAPE.value, ""),
            (7, R.BAD_SHAPE.value, ""),
            (8, R.WRONG_TYPE.value, "running"),
        ]
    )
    assert all(d.stream_seq == 7 and d.device == "d1" for d in out.dead_letters)
    assert all(d.reason for d in out.dead_letters)


def test_message_level_refusals() -> None:
    assert run(b"{not json").dead_letters[0].reason_code is R.NOT_JSON
    assert run(42).dead_letters[0].reason_code is R.BAD_SHAPE
    assert run({"readings": 5}).dead_letters[0].reason_code is R.BAD_SHAPE
    unknown = run({"asset": "m1", "values": {"rpm": 1}}, device="ghost")
    assert unknown.dead_letters[0].reason_code is R.UNKNOWN_DEVICE and not unknown.readings
    big = run(b"x" * 2000, limits=IngestLimits(max_message_bytes=1024))
    assert big.dead_letters[0].reason_code is R.TOO_LARGE
    assert len(big.dead_letters[0].payload or "") <= 2049
    many = run(
        [{"asset": "m1", "values": {"rpm": 1}}] * 3, limits=IngestLimits(max_readings_per_message=2)
    )
    assert many.dead_letters[0].reason_code is R.TOO_LARGE and not many.readings


def test_non_finite_and_integral_values() -> None:
    out = run(b'{"asset": "m1", "values": {"temperature": NaN, "rpm": 3.0}}')
    # NaN is not strict JSON, but only the value is refused: its neighbours are kept.
    assert [(d.reason_code, d.telemetry) for d in out.dead_letters] == [
        (R.WRONG_TYPE, "temperature")
    ]
    assert out.readings[0].values == {"rpm": 3.0}
    out = run({"asset": "m1", "values": {"rpm": 3.0}})
    assert out.readings[0].values == {"rpm": 3.0}


def test_non_finite_numbers_refuse_only_their_value() -> None:
    raw = (
        b'[{"asset": "m1", "ts": %d, "values": {"temperature": Infinity, "rpm": 1}},'
        b' {"asset": "m1", "ts": %d, "values": {"temperature": -Infinity, "state": NaN}},'
        b' {"asset": "m1", "ts": %d, "values": {"temperature": 20.5, "rpm": 99999999999999999999}},'
        b' {"asset": "m1", "ts": NaN, "values": {"rpm": 2}}]'
    ) % (NOW - 3, NOW - 2, NOW - 1)
    out = run(raw)
    refused = [(d.item, d.reason_code, d.telemetry) for d in out.dead_letters]
    assert refused == [
        (0, R.WRONG_TYPE, "temperature"),
        (1, R.WRONG_TYPE, "temperature"),
        (1, R.WRONG_TYPE, "state"),
        (2, R.OUT_OF_RANGE, "rpm"),
        (3, R.BAD_TIMESTAMP, None),
    ]
    assert "Infinity" in out.dead_letters[0].reason
    assert out.dead_letters[0].payload == '{"temperature":"Infinity"}'
    assert [(r.ts, r.values) for r in out.readings] == [
        (NOW - 3, {"rpm": 1}),
        (NOW - 1, {"temperature": 20.5}),
    ]


def test_what_cannot_be_stored_stays_unreadable() -> None:
    # A lone surrogate (and bad UTF-8) cannot be written back by orjson or kept by PostgreSQL.
    for raw in (b'{"asset": "m1", "values": {"state": "\\ud800", "temperature": NaN}}', b"\xff{"):
        out = run(raw)
        assert [d.reason_code for d in out.dead_letters] == [R.NOT_JSON], raw
        assert out.readings == []


def test_nul_characters_never_reach_the_store() -> None:
    out = run(
        {
            "asset": "m1",
            "ts": NOW - 1,
            "values": {"state": "a\u0000b", "rpm": 1, "bad\u0000name": 1},
        }
    )
    assert [(d.reason_code, d.telemetry) for d in out.dead_letters] == [
        (R.OUT_OF_RANGE, "state"),
        (R.UNKNOWN_TELEMETRY, "bad\\u0000name"),
    ]
    assert all("\x00" not in (d.payload or "") + d.reason for d in out.dead_letters)
    assert out.readings[0].values == {"rpm": 1}
    out = run(b"\x00not json")
    assert "\x00" not in (out.dead_letters[0].payload or "")


def test_dead_letter_names_fit_their_columns() -> None:
    out = run({"asset": "x" * 5000, "values": {"y" * 5000: 1}})
    assert out.dead_letters[0].reason_code is R.UNKNOWN_ASSET
    assert len(out.dead_letters[0].asset or "") == 200


def test_dead_letters_of_one_message_are_capped_with_one_summary() -> None:
    # The shape of the review's finding: thousands of readings, each with bad values.
    readings = [
        {"asset": "m1", "ts": NOW - 10_000 + i, "values": {"temperature": "hot", "x": 1, "rpm": i}}
        for i in range(5000)
    ]
    out = run(readings, limits=IngestLimits(max_message_bytes=1024**2))
    assert len(out.dead_letters) == 101
    assert all(d.reason_code is not R.CAPPED for d in out.dead_letters[:100])
    summary = out.dead_letters[100]
    assert summary.reason_code is R.CAPPED and summary.item is None
    assert summary.reason.startswith("9900 more refusals")
    detail = json.loads(summary.payload or "")
    assert detail["refused"] == 9900
    assert detail["by_reason"] == {"wrong-type": 4950, "unknown-telemetry": 4950}
    assert detail["by_telemetry"] == {"temperature": 4950, "x": 4950}
    assert summary.asset == "m1"
    # Every valid value is still kept.
    assert out.value_count == 5000 and len(out.readings) == 5000


def test_values_that_merge_are_counted_once_as_stored() -> None:
    """Two readings without `ts` in one message get the same time: one value per telemetry is
    stored, so the answer must not say two were accepted."""
    out = run(
        [
            {"asset": "m1", "values": {"rpm": 1, "state": "a"}},
            {"asset": "m1", "values": {"rpm": 2}},
            {"asset": "m1", "ts": NOW - 1, "values": {"rpm": 3}},
        ]
    )
    assert len(out.readings) == 3
    assert (out.value_count, out.merged) == (3, 1)  # rpm@NOW, state@NOW, rpm@NOW-1
    single = run({"asset": "m1", "values": {"rpm": 1}})
    assert (single.value_count, single.merged) == (1, 0)
