import pytest

from fogline.bus.errors import BrokerConfigInvalid
from fogline.bus.subjects import Subjects
from fogline.domain.errors import InvalidInput
from fogline.domain.ids import is_slug, require_slug
from fogline.domain.telemetry import SourceKind


@pytest.mark.parametrize("value", ["m1", "motor-01", "a_b", "0abc", "x" * 64])
def test_slugs_accepted(value: str) -> None:
    assert is_slug(value)


@pytest.mark.parametrize(
    "value", ["", "a.b", "a/b", "a*", "a>", "a+b", "a#", "a b", "Motor", "-a", "x" * 65, 5, None]
)
def test_non_slugs_refused(value: object) -> None:
    assert not is_slug(value)
    with pytest.raises(InvalidInput) as err:
        require_slug(value, "id")
    assert err.value.problems[0].field == "id"


def test_telemetry_subject_round_trip() -> None:
    s = Subjects()
    subject = s.telemetry("acme", "gw-1")
    assert subject == "fogline.acme.devices.gw-1.telemetry"
    assert s.mqtt_topic(subject) == "fogline/acme/devices/gw-1/telemetry"
    assert s.parse_telemetry(subject) == ("acme", "gw-1")
    assert s.subject_from_topic("fogline/acme/devices/gw-1/telemetry") == subject


@pytest.mark.parametrize(
    "subject",
    [
        "fogline.acme.devices.gw-1.state",
        "other.acme.devices.gw-1.telemetry",
        "fogline.ACME.devices.gw-1.telemetry",
        "fogline.acme.assets.gw-1.telemetry",
        "fogline.acme.devices.telemetry",
    ],
)
def test_non_telemetry_subjects_are_not_parsed(subject: str) -> None:
    assert Subjects().parse_telemetry(subject) is None


@pytest.mark.parametrize("version", ["1.0.0", "0.2.0", "1.0.0-rc.1+build.5", "10.20.30-a-b"])
def test_model_outputs_subjects_carry_the_version(version: str) -> None:
    s = Subjects()
    subject = s.model_outputs("acme", "scorer", version)
    assert subject.startswith("fogline.acme.models.scorer.outputs.")
    assert subject.count(".") == 5  # the version is one token, whatever dots it has
    assert s.parse_source(subject) == (SourceKind.MODEL, "acme", f"scorer@{version}")
    # Each version has its own subject; all of them are in the stream's filter.
    assert subject != s.model_outputs("acme", "scorer", version + "1")
    assert s.model_outputs_filter == "fogline.*.models.*.outputs.*"
    # What an older platform published (no version) is still read, as the model's alone.
    assert s.parse_source("fogline.acme.models.scorer.outputs") == (
        SourceKind.MODEL,
        "acme",
        "scorer",
    )


@pytest.mark.parametrize(
    "subject",
    [
        "fogline.acme.devices.gw-1.telemetry.1_0_0",
        "fogline.acme.models.scorer.state.1_0_0",
        "fogline.acme.models.Scorer.outputs.1_0_0",
        "fogline.acme.models.scorer.outputs.1_0_0~",
        "fogline.acme.models.scorer.outputs." + "1" * 65,
    ],
)
def test_not_model_outputs_subjects(subject: str) -> None:
    assert Subjects().parse_source(subject) is None


def test_topics_that_cannot_be_subjects() -> None:
    s = Subjects()
    assert s.subject_from_topic("fogline/a.b/devices/d/telemetry") is None
    assert s.subject_from_topic("/fogline/a/devices/d/telemetry") is None


def test_device_scope_covers_only_its_own_subtree() -> None:
    assert Subjects().device_scope("acme", "gw-1") == "fogline.acme.devices.gw-1.>"


def test_subject_root_is_checked() -> None:
    with pytest.raises(BrokerConfigInvalid):
        Subjects("Bad.Root")
    assert Subjects("fogline_test").telemetry_stream == "FOGLINE_TEST_TELEMETRY"
