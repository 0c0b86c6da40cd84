"""The library's catalog: every model's manifest is valid and documents its parameters, and
what bounds cannot say is refused at import."""

from __future__ import annotations

import pytest

from fogline.library.catalog import CATALOG
from fogline.models.manifest import check_manifest, with_parameter_values


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_library_model_documents_its_parameters(name: str) -> None:
    entry = CATALOG[name]
    manifest = check_manifest(entry.manifest).manifest
    assert manifest.parameters, f"{name} lets a user set nothing"
    for pname, spec in manifest.parameters.items():
        assert spec.description and len(spec.description) > 20, pname
        assert entry.parameter_problems({}) == []


def test_values_that_only_make_sense_together_are_checked_at_import() -> None:
    failure = CATALOG["motor-failure"]
    [problem] = failure.parameter_problems({"warning_probability": 0.95})
    assert "must not be above alarm_probability (0.9)" in problem.reason
    assert failure.parameter_problems({"warning_probability": 0.6}) == []
    discord = CATALOG["discord-anomaly"]
    [problem] = discord.parameter_problems({"m": 1000, "history": 1500})
    assert "history (1500) must be at least 2 x m" in problem.reason
    # Types and bounds are the manifest's: every problem at once, before this check.
    with pytest.raises(Exception, match="above the maximum"):
        check_manifest(with_parameter_values(failure.manifest, {"alarm_probability": 1.5}))


def test_the_motor_models_take_their_parameters() -> None:
    from fogline.library.motor_models import MotorFailure
    from fogline.library.motors import simulate

    windows = simulate(motors=2, duration_s=1800, seed=3)
    strict = MotorFailure(windows, warning_probability=0.99, alarm_probability=0.99)
    lenient = MotorFailure(windows, warning_probability=0.01, alarm_probability=0.99)
    rows = [w.features for w in windows[:50]]
    assert {o["failure_warning"] for o in lenient.predict(rows)} - {"alarm"} == {"warning"}
    assert "warning" not in {o["failure_warning"] for o in strict.predict(rows)}


@pytest.mark.parametrize("name", ["motor-failure", "motor-anomaly"])
def test_the_motor_models_say_they_know_only_the_simulators_motor(name: str) -> None:
    from fogline.api.schemas.models import LibraryEntryOut
    from fogline.sim.motors import AMBIENT_C, RATED_CURRENT_A

    entry = LibraryEntryOut.of(CATALOG[name])  # what `fogline library show` prints
    assert "simulator's motor" in entry.summary and "not" in entry.summary
    assert entry.expects is not None
    assert f"{RATED_CURRENT_A:g} A rated current" in entry.expects
    assert f"{AMBIENT_C:g} °C ambient" in entry.expects
    for column in ("vibration (mm/s)", "temperature (°C)", "current (A)", "sound_level (dB)"):
        assert column in entry.expects
    assert "fogline model backfill" in entry.expects
    assert LibraryEntryOut.of(CATALOG["robust-anomaly"]).expects is None
