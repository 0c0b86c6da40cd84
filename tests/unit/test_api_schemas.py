"""The API's schemas on their own: every route documents what it answers, and a mapping body
is read into what the models context checks, with the same messages as before it was typed."""

from pathlib import Path
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


REVIEWED_ASSET_TYPE = """
id: Bad.Type
telemetry:
  - {name: temp, dtype: flot, min: 300, max: 200}
  - {name: temp}
"""


def test_a_bad_dtype_hides_neither_the_range_nor_the_duplicate() -> None:
    """The outside review's asset type: the definition pydantic cannot read still has its
    range and its name checked (the default dtype standing in), in the same answer."""
    import pytest
    import yaml
    from pydantic import ValidationError

    from fogline.api.schemas.registry import AssetTypeIn

    with pytest.raises(ValidationError) as caught:
        AssetTypeIn.model_validate(yaml.safe_load(REVIEWED_ASSET_TYPE))
    found = {".".join(str(p) for p in e["loc"]): e["msg"] for e in caught.value.errors()}
    assert sorted(found) == ["id", "telemetry.0.dtype", "telemetry.0.min", "telemetry.1.name"]
    assert found["telemetry.0.min"] == "min 300.0 is above max 200.0"
    assert found["telemetry.1.name"] == "duplicate telemetry name 'temp'"


def test_asset_type_apply_names_a_bad_id_as_the_file_does(tmp_path: Path) -> None:
    """The id goes in the URL; a bad one is reported as `id` (not `path.type_id`), beside
    every problem of the rest, before any request (no platform is needed to say so)."""
    import os
    import subprocess
    import sys

    file = tmp_path / "type.yaml"
    file.write_text(REVIEWED_ASSET_TYPE)
    env = {**os.environ, "HOME": str(tmp_path), "FOGLINE_URL": "http://127.0.0.1:9"}
    code = "from fogline.cli.main import main; main()"
    r = subprocess.run(
        [sys.executable, "-c", code, "asset-type", "apply", str(file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 2, r.stderr
    assert "invalid input: 4 problems" in r.stderr
    for line in (
        "- id: 'Bad.Type' is not a slug",
        "- telemetry.0.dtype: Input should be 'float', 'int', 'bool' or 'string'",
        "- telemetry.0.min: min 300.0 is above max 200.0",
        "- telemetry.1.name: duplicate telemetry name 'temp'",
    ):
        assert line in r.stderr, r.stderr
    assert "path.type_id" not in r.stderr
