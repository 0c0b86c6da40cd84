"""`fogline bench`: benchmarks against a running platform, printing their figures."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from fogline.cli import output
from fogline.cli.context import ctx_of
from fogline.cli.output import console
from fogline.domain.errors import FoglineError, Problem

app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)


@app.command("ingest")
def bench_ingest(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(help="MQTT clients, one per device")] = 20,
    duration: Annotated[
        float, typer.Option(help="seconds of the latency phase (raw and max run 15 s each)")
    ] = 30.0,
    batch: Annotated[int, typer.Option(help="readings per message")] = 10,
    rate: Annotated[
        float,
        typer.Option(
            help="readings/s offered in total in the latency phase (0: 80 % of what the max "
            "phase committed); the raw and max phases always publish as fast as they can"
        ),
    ] = 0.0,
    processes: Annotated[int, typer.Option(help="publisher processes")] = 2,
) -> None:
    """Readings/s committed end to end against a running platform, latency publish to commit,
    and the raw MQTT-to-NATS rate of the same publishers for comparison. Three phases: raw and
    max publish flat out; the latency phase publishes at --rate (by default 80 % of the max
    phase's committed rate) and says whether its p99 held the 250 ms target."""
    from fogline.bench.ingest import IngestBenchConfig, run_ingest_bench

    c = ctx_of(ctx)
    client = c.client()
    report = run_ingest_bench(
        client,
        c.t(),
        IngestBenchConfig(
            devices=devices, duration_s=duration, batch=batch, rate=rate, processes=processes
        ),
    )
    c.show(report, lambda: report_print(report))


@app.command("e2e")
def bench_e2e(
    ctx: typer.Context,
    rate: Annotated[float, typer.Option(help="readings/s in the latency phase")] = 5000.0,
    duration: Annotated[float, typer.Option(help="seconds of load per phase")] = 30.0,
    models: Annotated[int, typer.Option(help="models deployed at once (0: skip)")] = 50,
    fleet_rate: Annotated[
        float, typer.Option(help="readings/s shared by the models of the fleet phase")
    ] = 1000.0,
    devices: Annotated[int, typer.Option(help="MQTT clients, one per device")] = 10,
    batch: Annotated[int, typer.Option(help="assets per device (readings per message)")] = 10,
    processes: Annotated[int, typer.Option(help="publisher processes")] = 2,
) -> None:
    """Latency from a device's publish to the model's output committed (and to the input
    committed, the baseline), and many models fed at once with every reading scored."""
    from fogline.bench.e2e import E2eBenchConfig, run_e2e_bench

    c = ctx_of(ctx)
    config = E2eBenchConfig(
        rate=rate,
        duration_s=duration,
        models=models,
        fleet_rate=fleet_rate,
        devices=devices,
        batch=batch,
        processes=processes,
    )
    config.check()  # bad settings are refused before anything is asked of the platform
    report = run_e2e_bench(
        c.client(), c.t(), config, progress=lambda line: output.errors.print(line, highlight=False)
    )
    c.show(report, lambda: report_print(report))


@app.command("faults")
def bench_faults(
    ctx: typer.Context,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            help="a fault to inject, repeatable (default: all): broker-kill, historian-freeze,"
            " database-outage, disk-full, disk-full-sudden, restart-storm"
        ),
    ] = None,
    rate: Annotated[float, typer.Option(help="readings/s the fleet offers")] = 500.0,
    devices: Annotated[int, typer.Option(help="MQTT clients, one per device")] = 4,
    batch: Annotated[int, typer.Option(help="assets per device (readings per message)")] = 5,
    warmup: Annotated[float, typer.Option(help="seconds of load before the fault")] = 5.0,
    duration: Annotated[
        float, typer.Option(help="seconds the historian is frozen / the database down")
    ] = 20.0,
    hold: Annotated[float, typer.Option(help="seconds the disk stays full")] = 10.0,
    after: Annotated[float, typer.Option(help="seconds of load after the recovery")] = 5.0,
    recovery_timeout: Annotated[
        float, typer.Option(help="seconds a fault may take to recover")
    ] = 60.0,
    kills: Annotated[int, typer.Option(help="SIGKILLs of the restart storm")] = 5,
    tmpfs_mb: Annotated[int, typer.Option(help="size of the disk-full data dir's tmpfs")] = 160,
    headroom_mb: Annotated[int, typer.Option(help="MiB the ballast leaves free at first")] = 24,
    seed: Annotated[int | None, typer.Option(help="seed of the restart storm's timing")] = None,
    work_dir: Annotated[
        Path | None,
        typer.Option(help="where the platforms' data and logs go (default: a temp dir)"),
    ] = None,
    keep: Annotated[bool, typer.Option(help="keep the work dir even when all went well")] = False,
) -> None:
    """Inject faults under QoS 1 MQTT load into platforms of its own (broker SIGKILL, a frozen
    historian, a database outage, a full disk, a restart storm) and compare every acknowledged
    reading with the stored history. Exits 1 when a fault lost acknowledged data or did not
    recover. Needs root for the disk-full faults (a tmpfs) and PostgreSQL's programs for the
    database outage; otherwise those are skipped, saying why."""
    from fogline.bench.faults import FAULTS, FaultBenchConfig, run_fault_bench

    c = ctx_of(ctx)
    config = FaultBenchConfig(
        faults=tuple(fault) if fault else FAULTS,
        rate=rate,
        devices=devices,
        batch=batch,
        warmup_s=warmup,
        fault_s=duration,
        hold_s=hold,
        after_s=after,
        recovery_timeout_s=recovery_timeout,
        kills=kills,
        tmpfs_mb=tmpfs_mb,
        headroom_mb=headroom_mb,
        seed=seed,
        work_dir=work_dir,
        keep=keep,
    )
    config.check()
    # SIGTERM unwinds like Ctrl-C, so every platform, database and mount is taken down.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = run_fault_bench(
            config, progress=lambda line: output.errors.print(line, highlight=False)
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    c.show(report, lambda: _faults_print(report))
    if not report["ok"]:  # exit 1, each failed fault and why on stderr
        failed = [r for r in report["faults"] if r["failures"]]
        raise FoglineError(
            f"{len(failed)} fault(s) failed: {', '.join(r['fault'] for r in failed)}",
            [Problem(r["fault"], f) for r in failed for f in r["failures"]],
        )


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _faults_print(report: dict[str, Any]) -> None:
    from rich import box
    from rich.table import Table

    table = Table(
        title="Faults (readings)", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    table.add_column("fault", no_wrap=True)
    for name in ("published", "acked", "stored", "lost", "dup", "recovery"):
        table.add_column(name, justify="right")
    table.add_column("verdict")
    for r in report["faults"]:
        if r.get("reason"):
            table.add_row(r["fault"], *["-"] * 6, r["status"])
            continue
        recovery = f"{r['recovery_s']:.1f} s" if r["recovery_s"] is not None else "none"
        figures = [r[k] for k in ("published", "acknowledged", "stored", "lost", "duplicated")]
        verdict = "ok" if r["status"] == "ok" else "[bold red]FAILED[/]"
        table.add_row(r["fault"], *(f"{n:,}" for n in figures), recovery, verdict)
    console.print(table)
    report_print(report)


def report_print(report: dict[str, Any]) -> None:
    for line in report.get("lines", []):
        console.print(line, highlight=False, soft_wrap=True)
