"""The OpenAPI schema tells the truth (issue 9): schemathesis, every check, against a running
platform, as an admin and as a tenant.

schemathesis runs as its own process (its CLI, the way anyone would run it) against the
platform this test starts; the JSON report gives the figures. Bounded by examples per
operation, not by time, so a run is the same run on a slow machine. `FOGLINE_CONTRACT_SEED`
picks the seed (`random` for a new one each run, printed); `FOGLINE_CONTRACT_EXAMPLES` the
examples per operation.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

from tests.conftest import Api, setup_motor
from tests.integration.test_security import make_tenant

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")
HOOKS = Path(__file__).with_name("contract_hooks.py")
DEFAULT_SEED = 20261201

# Every rule the API checks that a JSON schema can hold is in the schema. Some cannot be: a
# bound relative to now (`from=-100000d` is before 1970), `min` <= `max` of a telemetry, an
# asset's type that must exist, a manifest's own rules. Data valid by the schema may so still
# be refused with 422, which positive_data_acceptance is told; every other check is as shipped.
COMMON = f"""
hooks = "{HOOKS}"

[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "422"]

# The live, events and model log streams never end by themselves: their first event
# (`subscribed`, `following`, a line) is enough to check.
[[operations]]
include-path-regex = "/(live|events/stream|logs/stream)$"
max-stream-events = 1
"""


def config(tenants: list[str], auth: str) -> str:
    """Path parameters named `tenant` mostly name a tenant that exists, so calls get past 404
    into each route's own logic."""
    return (
        COMMON
        + f"""
[dictionaries.tenants]
values = {json.dumps(tenants)}

[parameters]
"path.tenant" = {{ dictionary = "tenants", probability = 0.7 }}
"""
        + auth
    )


async def run_schemathesis(
    base: str, directory: Path, name: str, settings: str, examples: int, seed: int
) -> dict[str, Any]:
    directory.mkdir(parents=True)
    config_file = directory / "schemathesis.toml"
    config_file.write_text(settings)
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        SCHEMATHESIS,
        "--config-file",
        str(config_file),
        "--no-color",
        "run",
        f"{base}/api/v1/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        str(examples),
        "--seed",
        str(seed),
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--report",
        "json",
        "--report-json-path",
        str(directory / "report.json"),
        cwd=directory,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    elapsed = time.monotonic() - started
    text = output.decode(errors="replace")
    report: dict[str, Any] = json.loads((directory / "report.json").read_text())
    cases = report["test_cases"]
    figures = (
        f"schemathesis as {name}: {report['operations']['tested']} operations, "
        f"{cases['generated']} cases, {cases['with_failures']} failing, "
        f"{sum(e['count'] for e in report['errors'])} errors, {elapsed:.1f} s (seed {seed})"
    )
    print(figures)
    assert process.returncode == 0, figures + "\n" + text[-20_000:]
    assert report["operations"]["tested"] == report["operations"]["total"], figures
    return report


async def test_the_openapi_schema_holds_under_schemathesis(api: Api, tmp_path: Path) -> None:
    acme = await make_tenant(api, "acme")
    globex = await make_tenant(api, "globex")
    await setup_motor(acme, tenant="acme")  # something to read, update and delete
    await setup_motor(api, tenant="default")
    chosen = os.environ.get("FOGLINE_CONTRACT_SEED", str(DEFAULT_SEED))
    seed = random.randrange(2**32) if chosen == "random" else int(chosen)
    examples = int(os.environ.get("FOGLINE_CONTRACT_EXAMPLES", "15"))

    assert api.key is not None and acme.key is not None and globex.key is not None
    as_admin = config(
        ["default", "acme"],
        f"""
[auth.openapi.ApiKey]
bearer = "{api.key}"
""",
    )
    await run_schemathesis(api.base, tmp_path / "admin", "admin", as_admin, examples, seed)

    # As acme's key, with globex's as the peer that must never see acme's objects
    # (object_level_authorization replays acme's reads with globex's key).
    wfc = tmp_path / "tenants.json"
    wfc.write_text(
        json.dumps(
            {
                "auth": [
                    {
                        "name": tenant,
                        "fixedHeaders": [{"name": "Authorization", "value": f"Bearer {key}"}],
                    }
                    for tenant, key in (("acme", acme.key), ("globex", globex.key))
                ]
            }
        )
    )
    as_tenant = config(
        ["acme"],
        f"""
[auth.wfc]
path = "{wfc}"
user = "acme"
peers = ["acme", "globex"]
""",
    )
    await run_schemathesis(api.base, tmp_path / "tenant", "tenant", as_tenant, examples, seed)
    await acme.close()
    await globex.close()
