"""The API's schemas on their own: every route documents what it answers, and a mapping body
is read into what the models context checks, with the same messages as before it was typed."""

from typing import Any, cast

import pytest
from pydantic import ValidationError

from fogline.api.app import create_app
from fogline.api.schemas.models import MappingsIn
from fogline.domain.errors import Problem
from fogline.models.mappings import ColumnRenames, MappingRequest


def test_every_answer_with_a_body_has_a_schema() -> None:
    schema = create_app(cast(Any, None)).openapi()
    undocumented = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if not status.startswith("2") or status == "204":
                    continue
                for media, content in response.get("content", {}).items():
                    if not (content.get("schema") or content.get("itemSchema")):
                        undocumented.append(f"{method.upper()} {path} {status} {media}")
    assert undocumented == []


def test_a_list_of_ids_maps_every_column_by_its_own_name() -> None:
    body = MappingsIn.model_validate(
        {"assets": {"m1": {"inputs": {"temperature": "winding_temp"}}}, "asset_types": ["motor"]}
    )
    assert body.to_domain() == MappingRequest(
        assets={"m1": ColumnRenames(inputs={"temperature": "winding_temp"})},
        asset_types={"motor": ColumnRenames()},
    )
    assert body.unknown_keys() == []


def test_an_unknown_key_is_left_for_the_models_context_to_tell_with_its_own_problems() -> None:
    body = MappingsIn.model_validate({"assets": ["m1"], "extra": 1})
    assert body.unknown_keys() == [Problem("extra", "unknown key; use 'assets' and 'asset_types'")]


@pytest.mark.parametrize(
    ("given", "where", "reason"),
    [
        ({"assets": 5}, ("assets",), "must be a list of ids or a mapping of id to columns"),
        ({"asset_types": None}, ("asset_types",), "must be a list of ids or a mapping"),
        ({"assets": {"m1": {"foo": {}}}}, ("assets", "m1"), "must be {'inputs': {...}, 'outputs'"),
        ({"assets": {"m1": None}}, ("assets", "m1"), "must be {'inputs': {...}, 'outputs'"),
        ({"assets": {"m1": {"inputs": {"t": 5}}}}, ("assets", "m1", "inputs", "t"), "string"),
    ],
)
def test_a_body_of_the_wrong_shape_says_where_and_why(
    given: dict[str, Any], where: tuple[str, ...], reason: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        MappingsIn.model_validate(given)
    [error] = caught.value.errors()
    assert error["loc"] == where
    assert reason in error["msg"]


def test_an_asset_type_names_every_problem_in_one_answer() -> None:
    """Unreadable definitions and broken rules of the readable ones, together (not the rules
    only once the types are fixed), each at a dotted path."""
    import pytest
    from pydantic import ValidationError

    from fogline.api.schemas.registry import AssetTypeIn

    body = {
        "id": "press",
        "telemetry": [
            {"name": "a", "dtype": "complex"},
            {"name": "b", "min": 5, "max": 1},
            {"name": "b"},
            {"name": "s", "dtype": "string", "min": 0},
        ],
        "attributes": [{"name": "site", "dtype": "int", "default": "x"}, {"name": 7}],
    }
    with pytest.raises(ValidationError) as caught:
        AssetTypeIn.model_validate(body)
    fields = sorted(".".join(str(p) for p in e["loc"]) for e in caught.value.errors())
    assert fields == [
        "attributes.0.default",
        "attributes.1.name",
        "telemetry.0.dtype",
        "telemetry.1.min",
        "telemetry.2.name",
        "telemetry.3",
    ]
