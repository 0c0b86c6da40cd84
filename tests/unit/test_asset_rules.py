import pytest

from fogline.domain.access import ApiKey, Role
from fogline.domain.assets import (
    AssetType,
    AttributeDefinition,
    DType,
    TelemetryDefinition,
    check_attribute_definitions,
    check_telemetry_definitions,
    resolve_attributes,
    value_matches,
)
from fogline.domain.errors import Forbidden, InvalidInput


@pytest.mark.parametrize(
    ("dtype", "good", "bad"),
    [
        (DType.FLOAT, [1, 1.5, -3, 0.0], [True, "1", None, float("inf"), float("nan"), [1]]),
        (DType.INT, [1, -3, 4.0], [1.5, True, "1", None]),
        (DType.BOOL, [True, False], [0, 1, "true", None]),
        (DType.STRING, ["x", ""], [1, True, None, {}]),
    ],
)
def test_value_types(dtype: DType, good: list[object], bad: list[object]) -> None:
    assert all(value_matches(dtype, v) for v in good)
    assert not any(value_matches(dtype, v) for v in bad)


def test_definitions_report_every_problem_at_once() -> None:
    problems = check_telemetry_definitions(
        [
            TelemetryDefinition("Temp", DType.FLOAT),
            TelemetryDefinition("t", DType.FLOAT, min=10, max=1),
            TelemetryDefinition("t", DType.STRING, min=1),
        ],
        "telemetry",
    )
    fields = [p.field for p in problems]
    assert "telemetry.0.name" in fields
    assert "telemetry.1.min" in fields
    assert "telemetry.2.name" in fields  # duplicate
    assert "telemetry.2" in fields  # range on a string
    assert (
        check_attribute_definitions(
            [AttributeDefinition("a", DType.INT, default="x")], "attributes"
        )[0].field
        == "attributes.0.default"
    )


def test_attributes_resolved_against_the_type() -> None:
    t = AssetType(
        "t",
        "motor",
        "Motor",
        None,
        (),
        (
            AttributeDefinition("power", DType.FLOAT, required=True),
            AttributeDefinition("maker", DType.STRING, default="ACME"),
        ),
    )
    assert resolve_attributes(t, {"power": 5, "extra": "kept"}) == {
        "power": 5,
        "maker": "ACME",
        "extra": "kept",
    }
    with pytest.raises(InvalidInput) as err:
        resolve_attributes(t, {"maker": 3})
    assert {p.field for p in err.value.problems} == {"attributes.power", "attributes.maker"}


def test_tenant_keys_stay_in_their_tenant() -> None:
    key = ApiKey("k", "acme", "k", Role.TENANT, 0)
    key.require_tenant("acme")
    with pytest.raises(Forbidden):
        key.require_tenant("globex")
    with pytest.raises(Forbidden):
        key.require_admin()
    admin = ApiKey("a", None, "a", Role.ADMIN, 0)
    admin.require_tenant("globex")
    admin.require_admin()


def test_a_range_bound_must_be_finite() -> None:
    defs = [
        TelemetryDefinition("a", DType.FLOAT, min=float("inf")),
        TelemetryDefinition("b", DType.FLOAT, max=float("nan")),
        TelemetryDefinition("c", DType.FLOAT, min=-1e300, max=1e300),
    ]
    problems = check_telemetry_definitions(defs, "telemetry")
    assert [(p.field, p.reason) for p in problems] == [
        ("telemetry.0.min", "must be a finite number"),
        ("telemetry.1.max", "must be a finite number"),
    ]
