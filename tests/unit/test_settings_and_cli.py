from pathlib import Path

import pytest

from fogline.app.settings import load_settings
from fogline.cli.main import hoist_global_options
from fogline.domain.errors import ConfigurationError


def test_precedence_file_then_env_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "fogline.yaml"
    config.write_text("http_port: 9001\nnats_port: 9002\nhot_retention: 2d\n")
    monkeypatch.setenv("FOGLINE_NATS_PORT", "9003")
    s = load_settings(config, data_dir=tmp_path, mqtt_port=9004)
    assert (s.http_port, s.nats_port, s.mqtt_port) == (9001, 9003, 9004)
    assert s.hot_retention_seconds == 2 * 86400
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'fogline.db'}"


def test_data_dir_config_file_is_read(tmp_path: Path) -> None:
    (tmp_path / "fogline.yaml").write_text("http_port: 9100\n")
    assert load_settings(data_dir=tmp_path).http_port == 9100


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("http_port: [1\n", "not valid YAML"),
        ("- a\n- b\n", "mapping"),
        ("http_port: lots\n", "http_port"),
        ("no_such_setting: 1\n", "no_such_setting"),
        ("hot_retention: forever\n", "hot_retention"),
    ],
)
def test_broken_config_is_one_clear_error(tmp_path: Path, text: str, fragment: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    with pytest.raises(ConfigurationError) as err:
        load_settings(config, data_dir=tmp_path)
    assert fragment in str(err.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml", data_dir=tmp_path)


def test_global_options_may_stand_anywhere() -> None:
    assert hoist_global_options(["device", "ls", "--json", "--tenant", "acme"]) == [
        "--json",
        "--tenant",
        "acme",
        "device",
        "ls",
    ]
    assert hoist_global_options(["up", "--data-dir=/x", "--http-port", "1"]) == [
        "--data-dir=/x",
        "up",
        "--http-port",
        "1",
    ]


def test_bench_e2e_settings_are_checked_all_at_once() -> None:
    from fogline.bench.e2e import E2eBenchConfig
    from fogline.domain.errors import InvalidInput

    E2eBenchConfig().check()
    with pytest.raises(InvalidInput) as refused:
        E2eBenchConfig(rate=0, duration_s=1, models=101, devices=10, batch=10).check()
    assert {p.field for p in refused.value.problems} == {"rate", "duration", "models"}


def test_every_settings_problem_in_one_answer() -> None:
    """A value pydantic cannot read does not hide the durations and sizes that break their
    own rules."""
    import pytest

    from fogline.app.settings import load_settings
    from fogline.domain.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            http_port=99999, disk_reserve="lots", history_retention="forevr", hot_retention="x"
        )
    fields = sorted(p.field for p in caught.value.problems)
    assert fields == ["disk_reserve", "history_retention", "hot_retention", "http_port"]
    with pytest.raises(ConfigurationError) as caught:
        load_settings(disk_reserve="lots", history_retention="forevr")
    assert sorted(p.field for p in caught.value.problems) == ["disk_reserve", "history_retention"]
