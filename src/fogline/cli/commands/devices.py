"""`fogline device`: devices and the MQTT credentials they publish with."""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer

from fogline.cli import output
from fogline.cli.context import ctx_of
from fogline.cli.inputs import key_value_pairs, read_bytes
from fogline.cli.output import console, emit_json, table
from fogline.client.http import ApiError, Unreachable
from fogline.domain.errors import InvalidInput, Problem, Unavailable

app = typer.Typer(help="Devices and their MQTT credentials.", no_args_is_help=True)


@app.command("create")
def device_create(
    ctx: typer.Context,
    device_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[str | None, typer.Option()] = None,
    cpu: Annotated[str | None, typer.Option()] = None,
    cores: Annotated[int | None, typer.Option(help="CPU cores")] = None,
    memory_mb: Annotated[int | None, typer.Option()] = None,
    accelerator: Annotated[str | None, typer.Option()] = None,
    connectivity: Annotated[str | None, typer.Option(help="ethernet, wifi, lte, ...")] = None,
    power: Annotated[str | None, typer.Option(help="mains, battery, solar, ...")] = None,
    firmware: Annotated[str | None, typer.Option()] = None,
    label: Annotated[list[str] | None, typer.Option(help="key=value, repeatable")] = None,
) -> None:
    """Register a device; prints its MQTT credentials (the password is shown once)."""
    c = ctx_of(ctx)
    hardware = {
        "cpu": cpu,
        "cpu_cores": cores,
        "memory_mb": memory_mb,
        "accelerator": accelerator,
        "connectivity": connectivity,
        "power_source": power,
    }
    created = c.client().post(
        f"/tenants/{c.t()}/devices",
        {
            "id": device_id,
            "name": name,
            "firmware": firmware,
            "hardware": {k: v for k, v in hardware.items() if v is not None},
            "labels": {k: str(v) for k, v in key_value_pairs(label, "label").items()},
        },
    )
    creds = created["credentials"]

    def human() -> None:
        console.print(f"device [bold]{device_id}[/] registered")
        console.print(f"  MQTT broker  {creds['mqtt']}")
        console.print(f"  username     {creds['username']}")
        console.print(f"  password     {creds['password']}   (shown once)")
        console.print(f"  topic        {creds['topic']}")

    c.show(created, human)


@app.command("ls")
def device_ls(ctx: typer.Context) -> None:
    """List devices with their ingest counters."""
    c = ctx_of(ctx)
    rows = c.client().get(f"/tenants/{c.t()}/devices")
    view = [
        {
            **r,
            "messages": (r.get("stats") or {}).get("messages"),
            "dead_letters": (r.get("stats") or {}).get("dead_letters"),
            "last_seen": (r.get("stats") or {}).get("last_seen"),
        }
        for r in rows
    ]
    c.show(
        rows,
        lambda: table(view, ["id", "firmware", "labels", "messages", "dead_letters", "last_seen"]),
    )


@app.command("show")
def device_show(
    ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Show a device, as JSON (the API's answer, every field: a document to read or pipe),
    with what the broker refused it (`security_events`); a summary of those goes to stderr."""
    c = ctx_of(ctx)
    device = c.client().get(f"/tenants/{c.t()}/devices/{device_id}")
    emit_json(device)
    if not c.as_json:
        for line in security_event_lines(device.get("security_events") or []):
            output.errors.print(line, highlight=False, markup=False, soft_wrap=True)


def security_event_lines(events: list[dict[str, Any]]) -> list[str]:
    """A line per kind of refusal: how many, when last, on what subject, from where."""
    return [
        f"security: {e['count']} {e['kind'].replace('_', ' ')} (first {e['first_seen']}, "
        f"last {e['last_seen']}"
        + (f", subject {e['last_subject']}" if e.get("last_subject") else "")
        + (f", from {e['last_address']}" if e.get("last_address") else "")
        + ")"
        for e in events
    ]


@app.command("rotate")
def device_rotate(
    ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Give a device a new MQTT password; the old one stops working."""
    c = ctx_of(ctx)
    creds = c.client().post(f"/tenants/{c.t()}/devices/{device_id}/credentials")
    c.show(creds, lambda: console.print(f"new password (shown once): {creds['password']}"))


@app.command("rm")
def device_rm(ctx: typer.Context, device_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Delete a device; its credentials stop working."""
    c = ctx_of(ctx)
    c.client().delete(f"/tenants/{c.t()}/devices/{device_id}")
    console.print(f"device {device_id} deleted")


# The columns of an import file: the device's fields, the hardware's flattened.
HARDWARE_COLUMNS = ("cpu", "cpu_cores", "memory_mb", "accelerator", "connectivity", "power_source")
INTEGER_COLUMNS = ("cpu_cores", "memory_mb")
IMPORT_COLUMNS = ("id", "name", "firmware", "labels", *HARDWARE_COLUMNS)


@dataclass
class ImportFile:
    """The rows of an import file as the API takes them, the file's line of each row, and
    what could not be read from its cells (that field is left out of the row sent)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    problems: list[tuple[int, Problem]] = field(default_factory=list)  # (row index, problem)
    header_problems: list[Problem] = field(default_factory=list)  # unknown columns

    def where(self, row: int) -> str:
        return f"row {row + 1} (line {self.lines[row]})"

    @property
    def bad(self) -> bool:
        return bool(self.problems or self.header_problems)


def read_import_file(path: Path) -> ImportFile:
    """A CSV file with a header: `id` (required), and any of name, firmware, labels
    (`k=v;k=v`), cpu, cpu_cores, memory_mb, accelerator, connectivity, power_source."""
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        problem = Problem(str(path), f"not UTF-8 text (byte {exc.start})")
        raise InvalidInput.of([problem], "file") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    if "id" not in header:
        raise InvalidInput.of(
            [Problem("columns", "an 'id' column is required")], f"import file {path}"
        )
    found = ImportFile()
    # An unknown column is reported with the rows' problems (its cells are not read), so the
    # one answer names both.
    unknown = [c for c in header if c not in IMPORT_COLUMNS]
    found.header_problems = [
        Problem(f"column {c!r}", f"unknown: the columns are {', '.join(IMPORT_COLUMNS)}")
        for c in unknown
    ]
    for cells in reader:
        index = len(found.rows)
        found.lines.append(reader.line_num)
        row, problems = _import_row({k: v for k, v in cells.items() if k not in unknown})
        found.rows.append(row)
        found.problems += [(index, p) for p in problems]
    if not found.rows:
        raise InvalidInput.of([Problem(str(path), "no rows after the header")], "import file")
    return found


def _import_row(cells: dict[str | Any, str | Any]) -> tuple[dict[str, Any], list[Problem]]:
    row: dict[str, Any] = {}
    hardware: dict[str, Any] = {}
    problems: list[Problem] = []
    if None in cells:  # more cells than the header has columns
        problems.append(Problem("", "more cells than the header has columns"))
    for column, value in cells.items():
        if column is None or value is None or value.strip() == "":
            continue
        value = value.strip()
        if column == "labels":
            labels, bad = _labels(value)
            row["labels"] = labels
            problems += bad
        elif column in INTEGER_COLUMNS:
            try:
                hardware[column] = int(value)
            except ValueError:
                problems.append(Problem(column, f"{value!r} is not a whole number"))
        elif column in HARDWARE_COLUMNS:
            hardware[column] = value
        else:
            row[column] = value
    if hardware:
        row["hardware"] = hardware
    return row, problems


def _labels(text: str) -> tuple[dict[str, str], list[Problem]]:
    labels: dict[str, str] = {}
    problems = []
    for pair in text.split(";"):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(Problem("labels", f"{pair!r} is not key=value (labels: k=v;k=v)"))
        else:
            labels[key.strip()] = value.strip()
    return labels, problems


def _api_row(field_path: str) -> tuple[int, str] | None:
    """`devices.<row>.<field>` as (row, field)."""
    parts = field_path.split(".", 2)
    if len(parts) >= 2 and parts[0] == "devices" and parts[1].isdigit():
        return int(parts[1]), parts[2] if len(parts) > 2 else ""
    return None


_API_ROW_REFERENCE = re.compile(r"\bdevices\.([0-9]+)\b")


def _rows_problems(found: ImportFile, remote: list[Problem]) -> list[Problem]:
    """Every problem, the file's and the platform's, in row order, each naming its row and its
    column as the file has them (the API's `devices.<i>.hardware.cpu_cores` is `row i+1 (line
    n) cpu_cores`, and so is a row the API's reason names)."""
    numbered = list(found.problems)
    unplaced = list(found.header_problems)
    for p in remote:
        place = _api_row(p.field)
        reason = _API_ROW_REFERENCE.sub(lambda m: _where(found, int(m.group(1))), p.reason)
        if place is None:
            unplaced.append(Problem(p.field, reason))
        else:
            column = place[1].removeprefix("hardware.")
            numbered.append((place[0], Problem(column, reason)))
    numbered.sort(key=lambda item: item[0])
    placed = [Problem(f"{found.where(row)} {p.field}".strip(), p.reason) for row, p in numbered]
    return unplaced + placed


def _where(found: ImportFile, row: int) -> str:
    return found.where(row) if 0 <= row < len(found.rows) else f"devices.{row}"


def _counted(message: str, count: int) -> str:
    """The API's headline with the number of problems listed (the file's and the API's)."""
    noun = "problem" if count == 1 else "problems"
    head = re.sub(r":\s*[0-9]+ problems?$", "", message)
    return f"{head}: {count} {noun}"


def _open_credentials(path: Path) -> int:
    """The credentials file, made now, readable by its owner only; an existing one is never
    overwritten (it may hold the only copy of other devices' passwords)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        problem = Problem(str(path), "exists already: give a new file (it is never overwritten)")
        raise InvalidInput.of([problem], "--credentials") from None
    except OSError as exc:
        raise InvalidInput.of(
            [Problem(str(path), exc.strerror or str(exc))], "--credentials"
        ) from None


@app.command("import")
def device_import(
    ctx: typer.Context,
    file: Annotated[
        Path, typer.Argument(help="CSV with a header; columns: " + ", ".join(IMPORT_COLUMNS))
    ],
    credentials: Annotated[
        Path | None,
        typer.Option(help="new file for the generated passwords (CSV id,password; mode 0600)"),
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="check every row, create nothing")] = False,
) -> None:
    """Register many devices from a CSV file, all or none. Every bad row is reported at once
    (row, field, problem), ids that exist as conflicts; nothing is created while any row is
    bad. The generated MQTT passwords go to --credentials, never to the terminal."""
    c = ctx_of(ctx)
    if credentials is None and not dry_run:
        raise InvalidInput.of([Problem("--credentials", "required: the file the passwords go to")])
    found = read_import_file(file)
    client = c.client()
    path = f"/tenants/{c.t()}/device-imports"
    # A row the file itself got wrong is still checked by the platform (as a dry run), so the
    # answer lists every problem of every row at once.
    checking_only = dry_run or found.bad
    descriptor = None if checking_only or credentials is None else _open_credentials(credentials)
    try:
        try:
            answer = client.post(path, {"devices": found.rows, "dry_run": checking_only})
        except ApiError as exc:
            problems = _rows_problems(found, exc.problems)
            message = _counted(exc.message, len(problems)) if exc.problems else exc.message
            status = 422 if found.bad else exc.status  # a file problem is no mere conflict
            raise ApiError(status, message, problems, exc.body) from None
        except Unreachable as exc:
            if checking_only:
                raise
            # The request may have been taken and its answer lost: the import is all or none,
            # so either every device exists (with passwords nobody has) or none does.
            raise Unavailable(
                f"{exc}. The platform may have registered all of the devices before the answer "
                f"was lost: `fogline device ls` shows whether they exist; if they do, "
                f"`fogline device rotate ID` gives each one a password you can keep"
            ) from None
        if found.bad:
            problems = _rows_problems(found, [])
            raise InvalidInput.of(problems, f"import file {file}")
        if descriptor is not None:
            # The devices exist now: the file is kept whatever happens while it is written.
            owned: int = descriptor
            descriptor = None
            _write_credentials(owned, answer["devices"])
    finally:
        if descriptor is not None:  # nothing was created: leave no empty file behind
            os.close(descriptor)
            if credentials is not None:
                credentials.unlink(missing_ok=True)
    summary = {k: v for k, v in answer.items() if k != "devices"}
    summary["ids"] = [d["id"] for d in answer["devices"]]
    summary["credentials"] = None if dry_run else str(credentials)

    def human() -> None:
        if dry_run:
            console.print(f"{len(found.rows)} device(s) checked: all valid, none created")
        else:
            console.print(
                f"{answer['created']} device(s) registered; their MQTT passwords are in "
                f"{credentials} (mode 0600, shown nowhere else)",
                highlight=False,
            )

    c.show(summary, human)


def _write_credentials(descriptor: int, devices: list[dict[str, Any]]) -> None:
    with os.fdopen(descriptor, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "username", "password"])
        for d in devices:
            writer.writerow([d["id"], d["username"], d["password"]])
