"""What the CLI prints for a person (tables) and for a script (errors under --json)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from fogline.cli import output
from fogline.cli.main import wants_json
from fogline.cli.next_steps import Advised, mapping_needed, next_step_for
from fogline.client.http import ApiError, Unreachable
from fogline.domain.errors import ConfigurationError, InvalidInput, Problem


def test_cells_show_values_never_python_reprs() -> None:
    assert output.cell({"site": "north", "line": 2}) == "site=north, line=2"
    assert output.cell(["a", "b"]) == "a, b"
    assert output.cell({"limits": {"min": 0}}) == 'limits={"min":0}'
    assert output.cell([{"k": 1}]) == '{"k":1}'
    assert output.cell(True) == "yes" and output.cell(None) == ""


def test_a_long_id_folds_in_a_narrow_table(monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = Console(width=40, record=True)
    monkeypatch.setattr(output, "console", narrow)
    long_id = "temperature-anomaly-" + "x" * 40
    output.table([{"id": long_id, "labels": {"a": "[b]"}}], ["id", "labels"])
    text = narrow.export_text()
    assert "…" not in text
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if "│" in line)
    assert long_id in first_column
    assert "a=[b]" in text  # markup-like text is printed as it is


def test_errors_under_json_are_problem_documents(capsys: pytest.CaptureFixture[str]) -> None:
    local = InvalidInput.of([Problem("labels.0", "must be key=value")], "asset")
    assert output.fail(local, as_json=True) == 2
    document = json.loads(capsys.readouterr().err)
    assert document == {
        "type": "about:blank",
        "title": "Invalid input",
        "status": 422,
        "detail": "invalid asset: 1 problem",
        "errors": [{"field": "labels.0", "reason": "must be key=value"}],
    }
    answered = ApiError(401, "unknown API key", [], {"type": "about:blank", "status": 401})
    assert output.fail(answered, as_json=True, next_step=next_step_for(answered)) == 5
    document = json.loads(capsys.readouterr().err)
    assert document["status"] == 401 and document["errors"] == []
    assert "--api-key" in document["next_step"] and "FOGLINE_API_KEY" in document["next_step"]
    assert output.fail(ConfigurationError("no url"), as_json=True) == 7
    assert json.loads(capsys.readouterr().err)["title"] == "Configuration error"


def test_next_steps_name_the_command() -> None:
    unreachable = Unreachable("http://127.0.0.1:9/api/v1", "Connection refused")
    step = next_step_for(unreachable)
    assert step is not None and "`fogline up`" in step and "--url" in step
    assert "127.0.0.1:9:" in step  # the URL the user gave, not the API's base
    unmapped = ApiError(422, "invalid deployment", [Problem("mappings", "PUT its mappings")], {})
    advised = mapping_needed(unmapped, "press", "0.1.0")
    assert isinstance(advised, Advised) and advised.kind is unmapped.kind
    assert "fogline model map press 0.1.0 --type" in advised.next_step
    other = ApiError(422, "invalid deployment", [Problem("manifest", "bad")], {})
    assert mapping_needed(other, "press", "0.1.0") is other
    assert next_step_for(InvalidInput("bad")) is None


def test_json_is_seen_wherever_it_stands_but_not_after_a_double_dash() -> None:
    assert wants_json(["--json", "asset", "ls"])
    assert not wants_json(["telemetry", "send", "--", "--json"])


def test_what_was_stored_cannot_drive_the_operators_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from fogline.cli.output import table, visible

    assert visible("\x1b[31mFW") == "\\x1b[31mFW"
    assert visible("line\nfake row") == "line\\nfake row"
    assert visible("x\u202ey") == "x\\u202ey"  # a right-to-left override
    assert visible("Pümpe 1") == "Pümpe 1"
    table([{"id": "d1", "firmware": "\x1b[31mFW\x07"}], ["id", "firmware"])
    shown = capsys.readouterr().out
    assert "\x1b[31m" not in shown and "\x07" not in shown
    assert "\\x1b[31mFW\\x07" in shown.replace("\n", "").replace("│", "").replace(" ", "")
