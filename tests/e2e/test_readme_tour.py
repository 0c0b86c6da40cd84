"""The README's tour, both parts, run as written against a real `fogline up`, so that the
README can never drift from the product again.

The commands are read from README.md itself (every `sh` block from "## A tour" to the next
"## " heading) and run one by one in bash, in a fresh home directory (the CLI finds the
platform through ~/.fogline/client.json, as the README says). The only changes are the ones a
test must make: `fogline up` runs in the background on free ports (through the environment,
the command itself unchanged), the tour's MQTT port is that free port, the password shown by
`fogline device create` takes the place of `<password>`, and `fogline telemetry live` (which
follows for ever) is stopped after a few seconds. What a comment says a command shows ("a few
seconds later: ...") is waited for.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import free_port, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = str(Path(sys.executable).parent)


def tour_commands() -> list[str]:
    """The tour's commands in order: heredocs and continued lines kept whole, comment-only
    lines left out."""
    text = README.read_text()
    tour = text[text.index("## A tour") :]
    tour = tour[: tour.index("\n## ", 1)]
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", tour, flags=re.S):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            i += 1
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command = line
            heredoc = re.search(r"<<'(\w+)'", line)
            if heredoc:
                while lines[i] != heredoc.group(1):
                    command += "\n" + lines[i]
                    i += 1
                command += "\n" + lines[i]
                i += 1
            while command.endswith("\\"):
                command += "\n" + lines[i]
                i += 1
            commands.append(command)
    return commands


def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    commands = tour_commands()
    # Both parts: the platform and its data, then the library model and one's own.
    assert len(commands) > 30 and "fogline model update press-anomaly --to 0.2.0" in "".join(
        commands
    )
    assert commands[:2] == [
        ". .venv/bin/activate",
        "fogline up                      # foreground; prints the HTTP, MQTT and NATS "
        "addresses and a first API key",
    ]
    home = tmp_path / "home"
    work = tmp_path / "work"
    home.mkdir()
    work.mkdir()
    mqtt_port = free_port()
    env = {
        **os.environ,
        "HOME": str(home),
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FOGLINE_HTTP_PORT": str(free_port()),
        "FOGLINE_NATS_PORT": str(free_port()),
        "FOGLINE_MQTT_PORT": str(mqtt_port),
        "FOGLINE_DISK_RESERVE": "64MiB",
        "COLUMNS": "200",
    }
    for name in ("FOGLINE_DATA_DIR", "FOGLINE_URL", "FOGLINE_API_KEY"):
        env.pop(name, None)
    client_file = home / ".fogline" / "client.json"
    platform: subprocess.Popen[str] | None = None
    password = ""
    try:
        for command in commands[1:]:
            if command.startswith("fogline up"):
                platform = subprocess.Popen(
                    ["bash", "-c", command],
                    cwd=work,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                wait_for(client_file.exists, 60, "~/.fogline/client.json")
                wait_for(lambda: run("fogline status", work, env).returncode == 0, 60, "ready")
                continue
            command = command.replace("-p 18830", f"-p {mqtt_port}")
            command = command.replace("'<password>'", f"'{password}'")
            if "fogline telemetry live" in command:
                shown = follow_for(command, work, env, seconds=3)
                continue
            done = run(command, work, env)
            assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
            shown = done.stdout
            if command.startswith("fogline device create"):
                password = re.search(r"password\s+(\S+)", shown).group(1)  # type: ignore[union-attr]
            check_what_the_comment_promises(command, shown, work, env)
        assert platform is not None
        os.killpg(platform.pid, signal.SIGINT)  # the terminal's Ctrl-C
        assert platform.wait(60) == 0
        platform = None
    finally:
        if platform is not None:
            os.killpg(platform.pid, signal.SIGKILL)
            platform.wait(30)


def run(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def follow_for(command: str, cwd: Path, env: dict[str, str], seconds: float) -> str:
    """A command that follows for ever, stopped after `seconds` (as a user's Ctrl-C)."""
    process = subprocess.Popen(
        ["bash", "-c", command],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGINT)
        out, _ = process.communicate(timeout=30)
    return out


def check_what_the_comment_promises(
    command: str, shown: str, cwd: Path, env: dict[str, str]
) -> None:
    """The tour's comments say what some commands show; where it may take a moment (a model
    scores asynchronously), it is waited for."""
    if command.startswith("fogline telemetry latest m1        # a few seconds later"):
        # the detector's first readings are its warm-up: a level that says so, no score
        wanted = ("temperature_warning", "warming-up")
    elif command.startswith("fogline telemetry latest p1"):
        wanted = ("score", "120", "high")
    elif command.startswith("fogline telemetry latest m1"):
        wanted = ("61.5",)
    else:
        return
    if all(w in shown for w in wanted):
        return

    def shows_it() -> bool:
        return all(w in run(command, cwd, env).stdout for w in wanted)

    wait_for(shows_it, 60, f"{command!r} to show {wanted}")
