import copy
import json
from typing import Any

import pytest

from fogline.domain.errors import InvalidInput
from fogline.models.manifest import REDACTED, TriggerType, parse_manifest

DESIGN_EXAMPLE = """
manifest:
  name: temperature-anomaly
  version: 1.0.0
  description: Detects anomalies in temperature values
  model:
    type: http
    scoreEndpoint: /score
    healthCheckEndpoint: /health
    hosted: internal
    url: null
    stateful: true
    async: false
    container:
      image: temperaturemodel
      tag: latest
      customRegistry: {registry: imageregistry.example, username: user, password: secret}
  trigger:
    type: TIME_WINDOW
    frequency: 5000
    timeWindowSize: 10000
  inputs:  [{dataColumnName: temperature, readAsString: false}]
  outputs: [{dataColumnName: anomalyScore, readAsString: false},
            {dataColumnName: warningLevel, readAsString: true}]
"""


def test_the_design_example_is_honoured_field_by_field() -> None:
    with pytest.raises(InvalidInput) as err:
        parse_manifest(DESIGN_EXAMPLE)
    # camelCase column names are not slugs: ids travel in subjects and must be lowercase.
    assert {p.field for p in err.value.problems} == {
        "manifest.outputs.0.dataColumnName",
        "manifest.outputs.1.dataColumnName",
    }
    fixed = DESIGN_EXAMPLE.replace("anomalyScore", "anomaly_score").replace(
        "warningLevel", "warning_level"
    )
    m = parse_manifest(fixed).manifest
    assert (m.name, m.version, m.description) == (
        "temperature-anomaly",
        "1.0.0",
        "Detects anomalies in temperature values",
    )
    assert (m.model.type, m.model.score_endpoint, m.model.health_check_endpoint) == (
        "http",
        "/score",
        "/health",
    )
    assert (m.model.hosted, m.model.url, m.model.stateful, m.model.is_async) == (
        "internal",
        None,
        True,
        False,
    )
    assert m.model.container is not None and m.model.container.custom_registry is not None
    assert m.model.container.custom_registry.password == "secret"
    assert (m.trigger.type, m.trigger.frequency, m.trigger.time_window_size) == (
        TriggerType.TIME_WINDOW,
        5000,
        10000,
    )
    assert [c.read_as_string for c in m.outputs] == [False, True]


def test_json_is_accepted_and_secrets_never_shown() -> None:
    fixed = DESIGN_EXAMPLE.replace("anomalyScore", "score").replace("warningLevel", "level")
    import yaml

    manifest = parse_manifest(json.dumps(yaml.safe_load(fixed)))
    assert manifest.registry_password == "secret"
    assert "secret" not in json.dumps(manifest.public())
    assert (
        manifest.public()["manifest"]["model"]["container"]["customRegistry"]["password"]
        == REDACTED
    )
    assert "password" not in json.dumps(manifest.without_secrets())


def test_every_problem_at_once() -> None:
    bad = {
        "manifest": {
            "name": "Bad Name",
            "version": "one",
            "model": {
                "type": "grpc",
                "hosted": "external",
                "scoreEndpoint": "score",
                "colour": "red",
            },
            "trigger": {"type": "TIME_WINDOW"},
            "inputs": [],
            "outputs": [{"dataColumnName": "x"}, {"dataColumnName": "x"}],
        }
    }
    with pytest.raises(InvalidInput) as err:
        parse_manifest(json.dumps(bad))
    fields = {p.field for p in err.value.problems}
    # Shape problems come first (pydantic lists them all); the manifest is refused before any
    # rule about meaning is checked, so fix the shape and the rest is listed next.
    assert {"manifest.model.type", "manifest.model.colour"} <= fields
    bad["manifest"]["model"] = {"type": "http", "hosted": "external", "scoreEndpoint": "score"}
    with pytest.raises(InvalidInput) as err:
        parse_manifest(json.dumps(bad))
    fields = {p.field for p in err.value.problems}
    assert fields == {
        "manifest.name",
        "manifest.version",
        "manifest.model.scoreEndpoint",
        "manifest.model.url",
        "manifest.trigger.frequency",
        "manifest.trigger.timeWindowSize",
        "manifest.inputs",
        "manifest.outputs.1.dataColumnName",
    }


def test_real_time_and_internal_rules() -> None:
    base = {
        "name": "m",
        "version": "1.0.0",
        "model": {"hosted": "internal"},
        "trigger": {"type": "REAL_TIME", "frequency": 10},
        "inputs": [{"dataColumnName": "a"}],
        "outputs": [{"dataColumnName": "b"}],
    }
    with pytest.raises(InvalidInput) as err:
        parse_manifest(json.dumps(base))
    assert {p.field for p in err.value.problems} == {"manifest.model", "manifest.trigger.frequency"}
    base["trigger"] = {"type": "REAL_TIME"}
    base["model"] = {"local": {"command": ["python", "-m", "my_model"]}}
    assert parse_manifest(json.dumps(base)).manifest.model.local is not None
    with pytest.raises(InvalidInput):
        parse_manifest("{: not yaml")


def test_caps_are_reported_with_every_other_problem() -> None:
    from fogline.domain.errors import InvalidInput
    from fogline.models.manifest import LimitCaps, parse_manifest

    body = {
        "name": "greedy",
        "version": "1.0.0",
        "model": {
            "local": {
                "command": ["python", "m.py"],
                "env": {"PYTHONPATH": "/x"},
                "limits": {"memoryMb": 100_000_000},
            }
        },
        "trigger": {"type": "REAL_TIME"},
        "inputs": [{"dataColumnName": "t"}],
        "outputs": [{"dataColumnName": "s"}],
    }
    try:
        parse_manifest(json.dumps(body), LimitCaps())
    except InvalidInput as exc:
        fields = {p.field for p in exc.problems}
    else:
        raise AssertionError("accepted")
    assert fields == {
        "manifest.model.local.env.PYTHONPATH",
        "manifest.model.local.limits.memoryMb",
    }


def test_every_problem_of_a_manifest_in_one_answer() -> None:
    """A field pydantic cannot read does not hide the rules broken by the parts it can: a
    user fixing the first answer must not get a second list."""
    import pytest

    from fogline.domain.errors import InvalidInput
    from fogline.models.manifest import check_manifest

    document = {
        "manifest": {
            "name": "Bad Name",
            "version": "1.0",
            "model": {"type": "http", "hosted": "external", "scoreEndpoint": "score"},
            "trigger": {"type": "SOMETIMES"},
            "inputs": [{"dataColumnName": "t"}, {"dataColumnName": "t"}],
            "outputs": [{"dataColumnName": "s", "readAsString": "maybe"}],
        }
    }
    with pytest.raises(InvalidInput) as caught:
        check_manifest(document)
    fields = sorted(p.field for p in caught.value.problems)
    assert fields == [
        "manifest.inputs.1.dataColumnName",  # duplicate
        "manifest.model.scoreEndpoint",  # not a path
        "manifest.model.url",  # external without url
        "manifest.name",
        "manifest.outputs.0.readAsString",  # pydantic
        "manifest.trigger.type",  # pydantic
        "manifest.version",
    ]


REVIEWED_MANIFEST = """
manifest:
  name: ../evil
  version: 0.1
  model:
    type: grpc
    scoreEndpoint: score
    local:
      command: python serve.py
      limits: {memoryMb: -5, cpus: 1000, processes: 8}
  trigger: {type: REAL_TIME}
  inputs: [{dataColumnName: t}, {dataColumnName: t}]
"""


@pytest.mark.parametrize("version", ["0.1", "'0.1'"])
def test_the_reviewed_manifest_gets_every_problem_in_one_answer(version: str) -> None:
    """The outside review's manifest: every problem, pydantic's and the rules', in the first
    answer, each once, under its dotted path (YAML reads 0.1 as a number: pydantic's problem;
    quoted, it is a string: the version rule's)."""
    from fogline.models.manifest import LimitCaps

    text = REVIEWED_MANIFEST.replace("version: 0.1", f"version: {version}")
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text, LimitCaps())
    fields = [p.field for p in caught.value.problems]
    assert sorted(fields) == [
        "manifest.inputs.1.dataColumnName",  # duplicate column
        "manifest.model.local.command",  # a string, not a list (pydantic)
        "manifest.model.local.limits.cpus",  # over the operator's cap, beside a bad limit
        "manifest.model.local.limits.memoryMb",  # below 64 (pydantic)
        "manifest.model.scoreEndpoint",  # no leading '/', beside a bad model type
        "manifest.model.type",  # grpc (pydantic)
        "manifest.name",  # not a slug, beside a version pydantic refused
        "manifest.outputs",  # missing (pydantic)
        "manifest.version",
    ]
    reasons = {p.field: p.reason for p in caught.value.problems}
    assert "model_max_cpus" in reasons["manifest.model.local.limits.cpus"]
    assert "'t'" in reasons["manifest.inputs.1.dataColumnName"]


def test_a_readable_part_gets_no_problem_of_a_default_standing_in() -> None:
    """An unreadable `hosted` or `local` does not make up problems about the url or the missing
    command; the limits that read and are within the caps are not reported."""
    from fogline.models.manifest import LimitCaps

    text = REVIEWED_MANIFEST.replace("type: grpc", "hosted: outside\n    url: http://x")
    text = text.replace("version: 0.1", "version: 1.0.0").replace("name: ../evil", "name: ok")
    text = text.replace("{dataColumnName: t}]", "{dataColumnName: u}]\n  outputs: [x]")
    with pytest.raises(InvalidInput) as caught:
        parse_manifest(text, LimitCaps(cpus=2000, memory_mb=10))
    assert sorted(p.field for p in caught.value.problems) == [
        "manifest.model.hosted",
        "manifest.model.local.command",
        "manifest.model.local.limits.memoryMb",
        "manifest.model.scoreEndpoint",
        "manifest.outputs.0",
    ]


def _with_parameters(parameters: object) -> dict[str, Any]:
    """A valid manifest (the library's temperature detector) with these parameters."""
    from fogline.library.catalog import CATALOG

    document = copy.deepcopy(CATALOG["temperature-anomaly"].manifest)
    document["manifest"]["parameters"] = parameters
    return document


def test_parameters_are_typed_bounded_and_given_to_the_model() -> None:
    from fogline.models.manifest import check_manifest

    manifest = check_manifest(
        _with_parameters(
            {
                "threshold": {"type": "number", "default": 3, "minimum": 0.5, "value": 4.5},
                "window": {"type": "integer", "default": 1440, "minimum": 10},
                "seasonal": {"type": "boolean", "default": True},
                "method": {"type": "string", "default": "mad", "enum": ["mad", "quantile"]},
            }
        )
    )
    assert manifest.manifest.parameter_values() == {
        "threshold": 4.5,
        "window": 1440,
        "seasonal": True,
        "method": "mad",
    }


def test_every_parameter_problem_at_once() -> None:
    from fogline.models.manifest import check_manifest

    with pytest.raises(InvalidInput) as caught:
        check_manifest(
            _with_parameters(
                {
                    "Bad-Name": {"type": "number", "default": 1},
                    "low": {"type": "number", "default": 0.1, "minimum": 0.5},
                    "count": {"type": "integer", "default": 2.5},
                    "flag": {"type": "boolean", "default": "yes", "minimum": 1},
                    "inverted": {"type": "number", "default": 1, "minimum": 5, "maximum": 2},
                    "mode": {"type": "string", "default": "x", "value": "z", "enum": ["x", "y"]},
                    "choices": {"type": "integer", "default": 1, "enum": [1, "two"]},
                    "kind": {"type": "colour", "default": "red"},
                }
            )
        )
    assert sorted(p.field for p in caught.value.problems) == [
        "manifest.parameters.Bad-Name",
        "manifest.parameters.choices.enum.1",
        "manifest.parameters.count.default",
        "manifest.parameters.flag.default",
        "manifest.parameters.flag.minimum",
        "manifest.parameters.inverted.default",
        "manifest.parameters.inverted.maximum",
        "manifest.parameters.kind.type",  # pydantic's: the readable rest is checked too
        "manifest.parameters.low.default",
        "manifest.parameters.mode.value",
    ]


def test_parameter_values_set_from_outside_name_declared_parameters_only() -> None:
    from fogline.models.manifest import with_parameter_values

    document = _with_parameters({"threshold": {"type": "number", "default": 3}})
    changed = with_parameter_values(document, {"threshold": 5})
    assert changed["manifest"]["parameters"]["threshold"]["value"] == 5
    assert "value" not in document["manifest"]["parameters"]["threshold"]  # a copy
    with pytest.raises(InvalidInput) as caught:
        with_parameter_values(document, {"threshold": 5, "thresold": 4, "other": 1})
    assert [p.field for p in caught.value.problems] == ["parameters.thresold", "parameters.other"]
    assert "it has: threshold" in caught.value.problems[0].reason


def test_parameter_values_get_every_problem_in_one_answer() -> None:
    """Unknown names, types and bounds, and the check of the values together (run with those
    that passed, the defaults standing in for the others), all under `parameters.<name>`."""
    from fogline.library.catalog import CATALOG
    from fogline.models.manifest import with_parameter_values

    entry = CATALOG["robust-anomaly"]
    values = {"nope": 1, "period_s": -5, "window": "abc", "bins": 1e9, "warning": "nan"}
    with pytest.raises(InvalidInput) as caught:
        with_parameter_values(entry.manifest, values | {"alarm": 1.1}, entry.parameter_problems)
    found = {p.field: p.reason for p in caught.value.problems}
    assert list(found) == [
        "parameters.nope",
        "parameters.period_s",
        "parameters.window",
        "parameters.bins",
        "parameters.warning",
        "parameters",
    ]
    assert found["parameters.bins"] == "1000000000 is above the maximum 1440"
    assert found["parameters.window"] == "'abc' is not a whole number"
    assert found["parameters.warning"] == "'nan' is not a number"
    assert found["parameters"] == "need 0 < warning <= alarm, got 1.3 and 1.1"
    # Without the alarm, the defaults agree: the cross check has nothing to say.
    with pytest.raises(InvalidInput) as caught:
        with_parameter_values(entry.manifest, values, entry.parameter_problems)
    assert "parameters" not in [p.field for p in caught.value.problems]
    # A whole float for an integer parameter is passed on as the integer.
    changed = with_parameter_values(entry.manifest, {"bins": 96.0}, entry.parameter_problems)
    bins = changed["manifest"]["parameters"]["bins"]["value"]
    assert bins == 96 and isinstance(bins, int)


def _window_manifest(trigger: dict[str, object]) -> str:
    return json.dumps(
        {
            "name": "m",
            "version": "1.0.0",
            "model": {"hosted": "external", "url": "http://example.com"},
            "trigger": trigger,
            "inputs": [{"dataColumnName": "x"}],
            "outputs": [{"dataColumnName": "y"}],
        }
    )


def test_event_time_window_fields_have_defaults_and_every_problem_is_named() -> None:
    ok = parse_manifest(
        _window_manifest({"type": "TIME_WINDOW", "frequency": 5, "timeWindowSize": 30})
    )
    trigger = ok.manifest.trigger
    assert (trigger.lateness_ms, trigger.idle_ms) == (10_000, 30_000)
    tuned = {"type": "TIME_WINDOW", "frequency": 5, "timeWindowSize": 5, "allowedLateness": 0}
    assert parse_manifest(_window_manifest(tuned)).manifest.trigger.lateness_ms == 0
    bad = {
        "type": "TIME_WINDOW",
        "frequency": 60,
        "timeWindowSize": 30,
        "allowedLateness": -1,
        "idleTimeout": 10,
    }
    with pytest.raises(InvalidInput) as err:
        parse_manifest(_window_manifest(bad))
    assert {p.field for p in err.value.problems} == {
        "manifest.trigger.frequency",
        "manifest.trigger.allowedLateness",
        "manifest.trigger.idleTimeout",
    }
    too_many = {"type": "TIME_WINDOW", "frequency": 1, "timeWindowSize": 1000}
    with pytest.raises(InvalidInput, match="sliding windows"):
        parse_manifest(_window_manifest(too_many))
    real_time = {"type": "REAL_TIME", "allowedLateness": 100}
    with pytest.raises(InvalidInput) as err:
        parse_manifest(_window_manifest(real_time))
    [problem] = err.value.problems
    assert (problem.field, problem.reason) == (
        "manifest.trigger.allowedLateness",
        "applies to TIME_WINDOW only",
    )
