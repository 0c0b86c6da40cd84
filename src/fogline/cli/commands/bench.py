"""`fogline bench`: benchmarks against a running platform, printing their figures."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from fogline.cli import output
from fogline.cli.context import ctx_of
from fogline.cli.output import console

app = typer.Typer(help="Benchmarks that print their figures.", no_args_is_help=True)


@app.command("ingest")
def bench_ingest(
    ctx: typer.Context,
    devices: Annotated[int, typer.Option(help="MQTT clients, one per device")] = 20,
    duration: Annotated[float, typer.Option(help="seconds of load per phase")] = 30.0,
    batch: Annotated[int, typer.Option(help="readings per message")] = 10,
    rate: Annotated[
        float, typer.Option(help="readings/s to offer in total (0: as fast as possible)")
    ] = 0.0,
    processes: Annotated[int, typer.Option(help="publisher processes")] = 2,
) -> None:
    """Readings/s committed end to end against a running platform, latency publish to commit,
    and the raw MQTT-to-NATS rate of the same publishers for comparison."""
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


def report_print(report: dict[str, Any]) -> None:
    for line in report.get("lines", []):
        console.print(line, highlight=False, soft_wrap=True)
