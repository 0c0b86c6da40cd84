"""One contract for the store, run against SQLite and the machine's PostgreSQL alike."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fogline.domain.access import Role
from fogline.domain.assets import (
    Asset,
    AssetType,
    AttributeDefinition,
    DType,
    Location,
    TelemetryDefinition,
)
from fogline.domain.devices import Device, HardwareProfile
from fogline.domain.errors import AlreadyExists, Conflict, NotFound, Unauthenticated
from fogline.domain.telemetry import (
    DeadLetter,
    DeadLetterReason,
    DeviceActivity,
    Reading,
    SourceKind,
)
from fogline.store.database import Database
from fogline.store.migrations import SCHEMA_VERSION, migrate
from fogline.store.telemetry import AlreadyCommitted, StreamOffset, ValueKind

T0 = 1_800_000_000_000


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fogline.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    database = Database.open(url)
    yield database
    database.close()


def motor(tenant: str = "acme") -> AssetType:
    return AssetType(
        tenant,
        "motor",
        "Motor",
        "a motor",
        (
            TelemetryDefinition("temperature", DType.FLOAT, "degC", -40, 200),
            TelemetryDefinition("rpm", DType.INT),
            TelemetryDefinition("running", DType.BOOL),
            TelemetryDefinition("state", DType.STRING),
        ),
        (AttributeDefinition("power", DType.FLOAT, required=True),),
    )


def seeded(db: Database) -> Database:
    db.tenants.create_tenant("acme", "ACME")
    db.assets.put_asset_type(motor())
    db.assets.create_asset(Asset("acme", "m1", "motor", "Motor 1", {"power": 5.5}))
    return db


def test_migrating_twice_is_harmless(db: Database) -> None:
    assert migrate(db.engine) == SCHEMA_VERSION


def test_registry_round_trip(db: Database) -> None:
    seeded(db)
    reg = db.assets
    assert reg.get_asset_type("acme", "motor") == motor()
    assert reg.put_asset_type(motor()) is False  # replaced, not created
    asset = Asset(
        "acme",
        "m2",
        "motor",
        "Motor 2",
        {"power": 1.0},
        {"line": "a"},
        "north",
        Location(45.5, 9.2, None),
    )
    reg.create_asset(asset)
    assert reg.get_asset("acme", "m2") == asset
    with pytest.raises(AlreadyExists):
        reg.create_asset(asset)
    assert [a.id for a in reg.list_assets("acme", "motor")] == ["m1", "m2"]
    with pytest.raises(Conflict):
        reg.delete_asset_type("acme", "motor")
    device = Device(
        "acme", "d1", "Gateway", HardwareProfile(cpu="arm", cpu_cores=4), "1.0", {"site": "north"}
    )
    db.devices.create_device(device, "$2a$hash")
    assert db.devices.get_device("acme", "d1") == device
    assert db.devices.device_password_hash("acme", "d1") == "$2a$hash"
    assert [c.username for c in db.devices.device_credentials()] == ["acme.d1"]
    with pytest.raises(AlreadyExists):
        db.devices.create_device(device, "x")
    db.devices.delete_device("acme", "d1")
    with pytest.raises(NotFound):
        db.devices.get_device("acme", "d1")


def test_api_keys(db: Database) -> None:
    seeded(db)
    key, secret = db.tenants.create_api_key("acme", "ci", Role.TENANT)
    assert db.tenants.authenticate(secret) == key
    with pytest.raises(Unauthenticated):
        db.tenants.authenticate(secret[:-2] + "xx")
    with pytest.raises(Unauthenticated):
        db.tenants.authenticate("garbage")
    db.tenants.revoke_api_key(key.id, "acme")
    with pytest.raises(Unauthenticated, match="revoked"):
        db.tenants.authenticate(secret)


def reading(ts: int, **values: object) -> Reading:
    return Reading("acme", "m1", ts, dict(values))


def test_batches_are_idempotent_and_merge(db: Database) -> None:
    store = seeded(db).telemetry
    batch = [reading(T0, temperature=20.0, rpm=100), reading(T0 + 1000, temperature=21.0)]
    offset = StreamOffset("hist", "STREAM@1", 10)
    store.commit_batch(batch, [], [DeviceActivity("acme", "d1", 2, 3, 0, T0)], offset)
    store.commit_batch(batch, [], [], offset)  # a redelivery stores nothing twice
    # A reading for the same time with other telemetry joins the stored one.
    store.commit_batch([reading(T0, running=True, state="run")], [], [], None)
    assert store.count_readings("acme") == 2
    history = store.history("acme", "m1", [], T0, T0 + 2000, 100)
    assert [(p.ts, p.value) for p in history["temperature"]] == [(T0, 20.0), (T0 + 1000, 21.0)]
    assert [(p.ts, p.value) for p in history["running"]] == [(T0, True)]
    assert store.read_offset("hist") == offset
    latest = store.latest("acme", "m1", [])
    assert (latest["temperature"].ts, latest["temperature"].value) == (T0 + 1000, 21.0)
    assert (latest["state"].ts, latest["state"].value) == (T0, "run")
    # An older reading arriving late does not replace the latest value.
    store.commit_batch([reading(T0 - 5000, temperature=-1.0)], [], [], None)
    assert store.latest("acme", "m1", ["temperature"])["temperature"].value == 21.0
    stats = store.device_stats("acme")[0]
    assert (stats.messages_total, stats.values_total) == (2, 3)


def model_reading(ts: int, **values: object) -> Reading:
    return Reading("acme", "m1", ts, dict(values), SourceKind.MODEL)


def test_a_models_value_never_replaces_a_devices(db: Database) -> None:
    store = seeded(db).telemetry
    # A model writes rpm first: it is a model's telemetry, and the model may write it again.
    store.commit_batch([model_reading(T0, rpm=1)], [], [], None)
    store.commit_batch([model_reading(T0, rpm=2)], [], [], None)
    assert store.device_telemetry("acme", ["m1"]) == {}
    assert store.latest("acme", "m1", ["rpm"])["rpm"].value == 2
    # A device writes temperature; a model's later temperature at that very time and at a
    # newer one is not kept (the historian refuses it before; the store holds even so), but
    # its other values join the device's row.
    store.commit_batch([reading(T0 + 10, temperature=20.0)], [], [], None)
    store.commit_batch(
        [
            model_reading(T0 + 10, temperature=99.0, state="hot"),
            model_reading(T0 + 20, temperature=98.0),
        ],
        [],
        [],
        None,
    )
    history = store.history("acme", "m1", [], T0, T0 + 100, 100)
    assert [(p.ts, p.value) for p in history["temperature"]] == [(T0 + 10, 20.0), (T0 + 20, 98.0)]
    assert [(p.ts, p.value) for p in history["state"]] == [(T0 + 10, "hot")]
    latest = store.latest("acme", "m1", [])
    assert (latest["temperature"].ts, latest["temperature"].value) == (T0 + 10, 20.0)
    assert store.device_telemetry("acme", ["m1", "nope"]) == {"m1": {"temperature"}}
    # In one batch, a device's value at the same time as a model's wins, whatever the order.
    store.commit_batch(
        [model_reading(T0 + 30, running=False), reading(T0 + 30, running=True)], [], [], None
    )
    assert store.history("acme", "m1", ["running"], T0, T0 + 100, 10)["running"][0].value is True
    # Once a device has written a telemetry it stays a device's, even from an older reading.
    store.commit_batch([reading(T0 - 1000, rpm=7)], [], [], None)
    assert store.device_telemetry("acme", ["m1"]) == {"m1": {"temperature", "running", "rpm"}}
    assert store.latest("acme", "m1", ["rpm"])["rpm"].value == 2  # still the newest
    # From then on a model's value replaces neither a stored value nor the latest one (at a
    # time with no reading it replaces nothing; the historian refuses it before it gets here).
    store.commit_batch([model_reading(T0, rpm=4), model_reading(T0 + 40, rpm=3)], [], [], None)
    assert store.latest("acme", "m1", ["rpm"])["rpm"].value == 2
    rpm = store.history("acme", "m1", ["rpm"], T0 - 1000, T0 + 100, 10)["rpm"]
    assert [(p.ts, p.value) for p in rpm] == [(T0 - 1000, 7), (T0, 2), (T0 + 40, 3)]


def test_device_counters_add_up_and_the_offset_moves(db: Database) -> None:
    store = seeded(db).telemetry
    first = [DeviceActivity("acme", "d1", 2, 8, 1, T0), DeviceActivity("acme", "d2", 1, 4, 0, T0)]
    store.commit_batch([reading(T0, rpm=1)], [], first, StreamOffset("hist", "S@1", 3))
    # The same device twice in one batch, and a last-seen time older than the stored one.
    again = [
        DeviceActivity("acme", "d1", 1, 4, 0, T0 - 10),
        DeviceActivity("acme", "d1", 3, 12, 2, T0 + 50),
    ]
    store.commit_batch([reading(T0 + 1, rpm=2)], [], again, StreamOffset("hist", "S@1", 9))
    stats = {d.device: d for d in store.device_stats("acme")}
    d1 = stats["d1"]
    assert (d1.messages_total, d1.values_total, d1.dead_letters_total) == (6, 24, 3)
    assert d1.last_seen_ms == T0 + 50
    assert (stats["d2"].messages_total, stats["d2"].last_seen_ms) == (1, T0)
    assert store.read_offset("hist") == StreamOffset("hist", "S@1", 9)


def test_a_batch_committed_before_is_refused_whole_and_counted_once(db: Database) -> None:
    """A historian whose commit answer was lost commits the same batch again: the offset in
    the database says it is in, and nothing of it is written or counted a second time."""
    store = seeded(db).telemetry
    activity = [DeviceActivity("acme", "d1", 10, 20, 1, T0)]
    letter = DeadLetter("acme", "d1", T0, DeadLetterReason.BAD_SHAPE, "not a reading", "x")
    first = StreamOffset("hist", "S@1", 10)
    store.commit_batch([reading(T0, rpm=1)], [letter], activity, first, first_seq=1)
    for again_from in (1, 5, 10):  # the same batch, or one that overlaps what is stored
        with pytest.raises(AlreadyCommitted) as refused:
            store.commit_batch(
                [reading(T0 + 1, rpm=2)],
                [letter],
                activity,
                StreamOffset("hist", "S@1", 15),
                first_seq=again_from,
            )
        assert refused.value.stored == first
    stats = store.device_stats("acme")[0]
    assert (stats.messages_total, stats.values_total, stats.dead_letters_total) == (10, 20, 1)
    assert store.dead_letter_counts("acme") == {"bad-shape": 1}
    assert store.count_readings("acme") == 1
    assert store.read_offset("hist") == first
    # The next messages commit; a new incarnation of the stream counts from 1 again.
    store.commit_batch([], [], activity, StreamOffset("hist", "S@1", 12), first_seq=11)
    store.commit_batch([], [], activity, StreamOffset("hist", "S@2", 1), first_seq=1)
    assert store.device_stats("acme")[0].messages_total == 30
    assert store.read_offset("hist") == StreamOffset("hist", "S@2", 1)


def test_latest_is_not_after_the_given_now(db: Database) -> None:
    """A reading from a clock ahead is kept, but the latest as of now is the newest one not
    after now; once its time has come, it is the latest."""
    store = seeded(db).telemetry
    ahead = T0 + 10 * 3_600_000
    store.commit_batch(
        [
            reading(T0, temperature=20.0, rpm=1),
            reading(T0 + 1000, temperature=21.0),
            reading(ahead, temperature=99.0, state="later"),
        ],
        [],
        [],
        None,
    )
    store.commit_batch([reading(T0 + 2000, rpm=2)], [], [], None)  # after the future one
    now = T0 + 5000
    latest = store.latest("acme", "m1", [], now)
    assert {n: (v.ts, v.value) for n, v in latest.items()} == {
        "temperature": (T0 + 1000, 21.0),
        "rpm": (T0 + 2000, 2),
    }
    only = store.latest("acme", "m1", ["temperature", "state"], now)
    assert {n: v.value for n, v in only.items()} == {"temperature": 21.0}
    later = store.latest("acme", "m1", ["temperature", "state"], ahead)
    assert {n: (v.ts, v.value) for n, v in later.items()} == {
        "temperature": (ahead, 99.0),
        "state": (ahead, "later"),
    }
    history = store.history("acme", "m1", ["temperature"], T0, ahead + 1, 100)
    assert [p.value for p in history["temperature"]] == [20.0, 21.0, 99.0]


def test_history_limit_and_keys(db: Database) -> None:
    store = seeded(db).telemetry
    store.commit_batch(
        [reading(T0 + i, rpm=i, temperature=float(i)) for i in range(10)], [], [], None
    )
    h = store.history("acme", "m1", ["rpm"], T0, T0 + 10, 3)
    assert list(h) == ["rpm"]
    assert [p.value for p in h["rpm"]] == [0, 1, 2]
    assert store.history("acme", "nope", ["rpm"], T0, T0 + 10, 3) == {"rpm": []}


def test_downsampling(db: Database) -> None:
    store = seeded(db).telemetry
    rows = [
        reading(T0 + i * 1000, temperature=float(i), running=i % 2 == 0, state="s")
        for i in range(20)
    ]
    store.commit_batch(rows, [], [], None)
    kinds = {"temperature": ValueKind.NUMBER, "running": ValueKind.BOOL, "state": ValueKind.TEXT}
    buckets = store.downsample("acme", "m1", kinds, T0, T0 + 20_000, 10_000)
    t = buckets["temperature"]
    assert [(b.start_ms, b.avg, b.min, b.max, b.count) for b in t] == [
        (T0, 4.5, 0.0, 9.0, 10),
        (T0 + 10_000, 14.5, 10.0, 19.0, 10),
    ]
    assert [b.avg for b in buckets["running"]] == [0.5, 0.5]
    assert [(b.count, b.avg) for b in buckets["state"]] == [(10, None), (10, None)]


def test_dead_letters(db: Database) -> None:
    store = seeded(db).telemetry
    letter = DeadLetter("acme", "d1", T0, DeadLetterReason.NOT_JSON, "not JSON", "{x", 4)
    store.commit_batch([], [letter, letter], [], None)
    stored = store.dead_letters("acme", None, None, 10)
    assert [s.letter for s in stored] == [letter, letter]
    assert store.dead_letter_counts("acme") == {"not-json": 2}
    assert store.dead_letters("acme", "other", None, 10) == []
    assert store.dead_letters("globex", None, None, 10) == []


def test_deleting_an_asset_deletes_its_history(db: Database) -> None:
    store = seeded(db).telemetry
    store.commit_batch([reading(T0, rpm=1)], [], [], None)
    db.assets.delete_asset("acme", "m1")
    assert store.count_readings("acme") == 0
    assert store.latest("acme", "m1", []) == {}


def test_migrating_a_version_1_database_gives_the_fresh_schema(db: Database) -> None:
    from sqlalchemy import inspect, text

    from fogline.store import schema as current

    v2_tables = MODEL_TABLES
    fresh = {t: {c["name"] for c in inspect(db.engine).get_columns(t)} for t in v2_tables}
    with db.engine.begin() as conn:
        for table in [*LATER_TABLES, *RETENTION_TABLES, *v2_tables]:
            conn.execute(text(f"DROP TABLE {table}"))
        drop_later_columns(conn)
        conn.execute(text("DROP INDEX IF EXISTS ix_dead_letters_source"))  # of version 7
        conn.execute(text("UPDATE fogline_schema_version SET version = 1"))
    assert migrate(db.engine) == 1
    migrated = {t: {c["name"] for c in inspect(db.engine).get_columns(t)} for t in v2_tables}
    assert migrated == fresh
    assert set(current.metadata.tables) <= set(inspect(db.engine).get_table_names())


def test_model_lifecycle_is_persisted_and_checked(db: Database) -> None:
    from fogline.domain.lifecycle import IllegalTransition, ModelEvent, ModelState
    from fogline.domain.models import TemplateColumn

    seeded(db)
    models = db.models
    created = models.create_model(
        "acme",
        "m",
        "1.0.0",
        None,
        {"manifest": {"name": "m"}},
        [TemplateColumn("input", "temperature", False)],
        None,
    )
    assert created.state is ModelState.DRAFT
    with pytest.raises(AlreadyExists):
        models.create_model("acme", "m", "1.0.0", None, {}, [], None)
    for event in (ModelEvent.DEPLOY, ModelEvent.DEPLOYED):
        models.transition("acme", "m", "1.0.0", event)
    with pytest.raises(IllegalTransition):
        models.transition("acme", "m", "1.0.0", ModelEvent.REMOVE)
    back = models.transition("acme", "m", "1.0.0", ModelEvent.UNHEALTHY, "health failed 5x")
    assert (back.state, back.state_reason) == (ModelState.DRAFT, "health failed 5x")
    events = [(e.event, e.to_state) for e in models.events("acme", "m", "1.0.0")]
    assert events == [
        ("submit", "draft"),
        ("deploy", "deploying"),
        ("deployed", "active"),
        ("unhealthy", "draft"),
    ]


def test_model_mappings_round_trip(db: Database) -> None:
    from fogline.domain.models import Mapping, ModelMappings, TemplateColumn

    seeded(db)
    model = db.models.create_model(
        "acme",
        "m",
        "1.0.0",
        None,
        {},
        [TemplateColumn("input", "temperature", False), TemplateColumn("output", "score", False)],
        None,
    )
    mappings = ModelMappings(
        (
            Mapping("input", "temperature", "m1", "temperature"),
            Mapping("output", "score", "m1", "rpm"),
        ),
        (Mapping("input", "temperature", "motor", "temperature"),),
    )
    db.model_mappings.replace(model.id, mappings)
    assert db.model_mappings.get(model.id) == mappings
    db.model_mappings.replace(model.id, ModelMappings((), ()))
    assert db.model_mappings.get(model.id) == ModelMappings((), ())


MODEL_TABLES = [
    "sagas",
    "stale_requests",
    "saga_steps",
    "model_deployments",
    "model_events",
    "asset_type_mappings",
    "model_mappings",
    "template_mappings",
    "models",
    "model_registries",
]


# Schema version 5: a database of an older version has none of them.
RETENTION_TABLES = ["telemetry_aggregates", "asset_type_retention", "tenant_retention"]
# Tables of versions after 5, newest first (dropped before the tables they refer to).
LATER_TABLES = ["model_dead_letters"]


def drop_later_columns(conn: Any) -> None:
    """Columns added to tables that older versions had: schema version 7's output sources; and
    version 8's table, to rewind to version 6 or 7."""
    from sqlalchemy import text

    conn.execute(text("ALTER TABLE latest_values DROP COLUMN source"))
    conn.execute(text("DROP TABLE IF EXISTS security_events"))


def at_version_3(db: Database) -> None:
    """The database as Fogline left it at schema version 3 (before sagas had owners)."""
    from alembic.migration import MigrationContext
    from alembic.operations import Operations
    from sqlalchemy import text

    from fogline.store.migrations import MIGRATIONS

    with db.engine.begin() as conn:
        for table in [*LATER_TABLES, *RETENTION_TABLES, *MODEL_TABLES]:
            conn.execute(text(f"DROP TABLE {table}"))
        drop_later_columns(conn)
        operations = Operations(MigrationContext.configure(conn))
        for step in MIGRATIONS:
            if step.to_version <= 3:
                step.apply(operations)
        conn.execute(text("DROP INDEX IF EXISTS ix_dead_letters_source"))  # of version 7
        conn.execute(text("UPDATE fogline_schema_version SET version = 3"))


def test_migrating_version_6_tells_models_telemetry_from_devices(db: Database) -> None:
    """Before version 7 nobody recorded who wrote a value: the telemetry a model's output is
    mapped to (of the asset, or of its type) is taken as the model's, the rest as devices'."""
    from sqlalchemy import text

    from fogline.domain.models import Mapping, ModelMappings, TemplateColumn

    store = seeded(db).telemetry
    columns = [
        TemplateColumn("input", "temperature", False),
        TemplateColumn("output", "speed", False),
        TemplateColumn("output", "label", True),
    ]
    model = db.models.create_model("acme", "m", "1.0.0", None, {}, columns, None)
    db.model_mappings.replace(
        model.id,
        ModelMappings(
            (Mapping("output", "speed", "m1", "rpm"),),
            (Mapping("output", "label", "motor", "state"),),
        ),
    )
    store.commit_batch([reading(T0, temperature=1.0, rpm=2, state="x", running=True)], [], [], None)
    with db.engine.begin() as conn:
        drop_later_columns(conn)
        conn.execute(text("DROP INDEX IF EXISTS ix_dead_letters_source"))  # of version 7
        conn.execute(text("UPDATE fogline_schema_version SET version = 6"))
    assert migrate(db.engine) == 6
    assert store.device_telemetry("acme", ["m1"]) == {"m1": {"temperature", "running"}}
    long_source = "model:" + "n" * 64 + "@" + "1" * 64  # a device id's column was 64 wide
    letter = DeadLetter("acme", long_source, T0, DeadLetterReason.DEVICE_TELEMETRY, "r", None)
    store.commit_batch([], [letter], [], None)
    assert store.dead_letters("acme", long_source, None, 10)[0].letter == letter


def test_migrating_version_3_keeps_every_saga_and_step(db: Database) -> None:
    from sqlalchemy import text

    from fogline.domain.sagas import SagaKey, SagaStatus, SagaStepRecord, StepStatus

    seeded(db)
    at_version_3(db)
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO models (id, tenant_id, name, version, state, manifest_json, "
                "created_at, updated_at) VALUES (7, 'acme', 'm', '1.0.0', 'deploying', '{}', 1, 1)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO model_deployments (model_id, tenant_id, saga, status, step, "
                "runtime_json, detail, updated_at) VALUES "
                "(7, 'acme', 'deploy', 'running', 'wait-healthy', '{\"pid\": 42}', NULL, 5)"
            )
        )
        for i, (step, status) in enumerate([("provision", "started"), ("provision", "done")]):
            conn.execute(
                text(
                    "INSERT INTO saga_steps (model_id, saga, step, status, attempt, detail, at) "
                    f"VALUES (7, 'deploy', '{step}', '{status}', 1, NULL, {10 + i})"
                )
            )
    assert migrate(db.engine) == 3
    key = SagaKey("model", "7")
    record = db.sagas.get(key)
    assert record is not None
    assert (record.tenant, record.name, record.run, record.status, record.step) == (
        "acme",
        "deploy",
        0,
        SagaStatus.RUNNING,
        "wait-healthy",
    )
    assert db.sagas.unfinished("model") == [record]
    assert db.sagas.steps(key) == [
        SagaStepRecord("deploy", "provision", StepStatus.STARTED, 1, None, 10),
        SagaStepRecord("deploy", "provision", StepStatus.DONE, 1, None, 11),
    ]
    assert db.deployments.runtime(7) == {"pid": 42}
    # The next saga counts from there, and new steps follow the old ones.
    assert db.sagas.begin(key, "acme", "deploy") == 1
    db.sagas.record(key, "acme", 1, "deploy", "provision", StepStatus.STARTED, 1, None)
    assert [s.at for s in db.sagas.steps(key)][:2] == [10, 11]


def test_sagas_are_kept_per_owner_with_their_steps(db: Database) -> None:
    from fogline.domain.sagas import SagaKey, SagaStatus, StepStatus

    seeded(db)
    sagas = db.sagas
    rollout, model = SagaKey("rollout", "r1"), SagaKey("model", "1")
    assert sagas.get(rollout) is None
    assert sagas.begin(rollout, "acme", "roll") == 1
    assert sagas.begin(model, "acme", "deploy") == 1
    sagas.record(rollout, "acme", 1, "roll", "wave-1", StepStatus.STARTED, 1, None)
    sagas.record(rollout, "acme", 1, "roll", "wave-1", StepStatus.FAILED, 1, "gate closed")
    sagas.record(rollout, "acme", None, "note", "seen", StepStatus.DONE, 1, "beside the saga")
    record = sagas.get(rollout)
    assert record is not None
    assert (record.step, record.status, record.run) == ("wave-1", SagaStatus.RUNNING, 1)
    assert {r.key for r in sagas.unfinished("rollout")} == {rollout}
    sagas.set_status(rollout, SagaStatus.FAILED, "wave-1 failed")
    assert sagas.unfinished("rollout") == []
    assert [r.key for r in sagas.unfinished("model")] == [model]
    failed = sagas.get(rollout)
    assert failed is not None and (failed.status, failed.detail) == (
        SagaStatus.FAILED,
        "wave-1 failed",
    )
    assert [(s.step, s.status, s.detail) for s in sagas.steps(rollout)] == [
        ("wave-1", StepStatus.STARTED, None),
        ("wave-1", StepStatus.FAILED, "gate closed"),
        ("seen", StepStatus.DONE, "beside the saga"),
    ]
    assert [s.status for s in sagas.steps(rollout, run=1)] == [
        StepStatus.STARTED,
        StepStatus.FAILED,
    ]
    assert [s.step for s in sagas.steps(rollout, limit=1)] == ["seen"]  # the latest
    # A new saga of the same owner: the next run, running again, its own steps.
    assert sagas.begin(rollout, "acme", "roll-back") == 2
    again = sagas.get(rollout)
    assert again is not None
    assert (again.name, again.status, again.step, again.detail) == (
        "roll-back",
        SagaStatus.RUNNING,
        None,
        None,
    )
    assert sagas.steps(rollout, run=2) == []
    assert sagas.steps(model) == []


# -- retention ---------------------------------------------------------------------------------

DAY = 86_400_000
HOUR = 3_600_000
NOW = T0 + 400 * DAY


def retention_job(db: Database, history: str, aggregates: str = "off", batch: int = 10) -> Any:
    from fogline.domain.retention import platform_default
    from fogline.ingest.retention import RetentionJob, RetentionJobSettings

    return RetentionJob(
        db.retention,
        platform_default(history, aggregates),
        RetentionJobSettings(batch_rows=batch, pause_s=0),
        clock=lambda: NOW,
    )


def stored_ts(db: Database, tenant: str, asset: str) -> list[int]:
    history = db.telemetry.history(tenant, asset, ["rpm"], 0, NOW + DAY, 100_000)
    return [p.ts for p in history["rpm"]]


async def test_retention_deletes_expired_readings_in_bounded_batches(db: Database) -> None:
    store = seeded(db).telemetry
    cutoff = NOW - 30 * DAY
    expired = [cutoff - 1 - i * 60_000 for i in range(25)]
    kept = [cutoff, cutoff + 1, NOW - 1000]
    store.commit_batch([reading(ts, rpm=1) for ts in expired + kept], [], [], None)
    (series,) = db.retention.retained_series()
    assert (series.tenant, series.asset, series.asset_type) == ("acme", "m1", "motor")
    # One step deletes at most its batch, the oldest first.
    first = db.retention.expire_readings(series.series_id, cutoff, 10, aggregate=False)
    assert (first.deleted, first.aggregated) == (10, 0)
    assert stored_ts(db, "acme", "m1") == sorted(expired)[10:] + kept
    job = retention_job(db, "30d")
    report = await job.run_once()
    assert report.readings_deleted == 15
    assert stored_ts(db, "acme", "m1") == kept
    assert job.stats.oldest_reading_ms == cutoff
    assert (job.stats.runs, job.stats.readings_deleted, job.stats.last_run_at_ms) == (1, 15, NOW)
    assert db.telemetry.latest("acme", "m1", ["rpm"])["rpm"].ts == NOW - 1000
    again = await job.run_once()
    assert again.readings_deleted == 0
    assert stored_ts(db, "acme", "m1") == kept


async def test_retention_history_forever_keeps_everything(db: Database) -> None:
    store = seeded(db).telemetry
    store.commit_batch([reading(NOW - 3000 * DAY, rpm=1)], [], [], None)
    report = await retention_job(db, "off").run_once()
    assert report.readings_deleted == 0
    assert stored_ts(db, "acme", "m1") == [NOW - 3000 * DAY]


async def test_retention_asset_type_overrides_tenant_overrides_platform(db: Database) -> None:
    from fogline.domain.retention import RetentionOverride

    seeded(db)
    db.tenants.create_tenant("globex", "Globex")
    db.assets.put_asset_type(motor("globex"))
    db.assets.create_asset(Asset("globex", "g1", "motor", "G1", {"power": 1.0}))
    pump = AssetType("acme", "pump", "Pump", None, (TelemetryDefinition("rpm", DType.INT),), ())
    db.assets.put_asset_type(pump)
    db.assets.create_asset(Asset("acme", "p1", "pump", "P1", {}))
    ages = [45 * DAY, 20 * DAY, 5 * DAY]
    batch = [
        Reading(tenant, asset, NOW - age, {"rpm": 1})
        for tenant, asset in (("acme", "m1"), ("acme", "p1"), ("globex", "g1"))
        for age in ages
    ]
    db.telemetry.commit_batch(batch, [], [], None)
    db.retention.set_tenant_override("acme", RetentionOverride(history="10d"))
    db.retention.set_asset_type_override("acme", "pump", RetentionOverride(history="60d"))
    # globex's motor type sets nothing: the platform's 30d holds there.
    await retention_job(db, "30d").run_once()
    assert stored_ts(db, "acme", "m1") == [NOW - 5 * DAY]  # the tenant's 10d
    assert stored_ts(db, "acme", "p1") == [NOW - a for a in ages]  # the asset type's 60d
    assert stored_ts(db, "globex", "g1") == [NOW - 20 * DAY, NOW - 5 * DAY]  # the platform's
    # An override that sets nothing is gone, and the level above holds again.
    db.retention.set_asset_type_override("acme", "pump", RetentionOverride())
    assert db.retention.asset_type_overrides("acme") == {}
    await retention_job(db, "30d").run_once()
    assert stored_ts(db, "acme", "p1") == [NOW - 5 * DAY]
    with pytest.raises(NotFound):
        db.retention.set_asset_type_override("acme", "nope", RetentionOverride(history="1d"))
    with pytest.raises(NotFound):
        db.retention.set_tenant_override("nope", RetentionOverride(history="1d"))


async def test_retention_changes_keep_every_resolved_policy_coherent(db: Database) -> None:
    """A change at any level is checked against what it resolves to for the tenant and each
    asset type inheriting from it, in the change's own transaction: a refused change stores
    nothing, and no sequence of accepted changes leaves aggregates dying before their readings.
    """
    from fogline.domain.errors import InvalidInput
    from fogline.domain.retention import RetentionOverride, platform_default
    from fogline.ingest.retention import RetentionPolicies

    seeded(db)
    policies = RetentionPolicies(db.retention, db.assets, platform_default("90d", "off"))

    async def refused(
        fragment: str, tenant_level: bool, history: str | None, aggs: str | None
    ) -> None:
        with pytest.raises(InvalidInput) as caught:
            if tenant_level:
                await policies.set_tenant("acme", history, aggs)
            else:
                await policies.set_asset_type("acme", "motor", history, aggs)
        assert fragment in str(caught.value), str(caught.value)

    await policies.set_asset_type("acme", "motor", None, "365d")
    # Aggregates of a day under a history kept forever: nothing would ever be aggregated.
    await refused("nothing expires to aggregate", False, "forever", "1d")
    await refused("nothing expires to aggregate", True, "forever", "5d")
    await policies.set_asset_type("acme", "motor", "forever", "forever")
    assert db.retention.asset_type_overrides("acme") == {
        "motor": RetentionOverride("forever", "forever")
    }
    # The asset type's history back to the tenant's, and the tenant's shortened: each time,
    # motor's resolved policy must stay coherent.
    await policies.set_asset_type("acme", "motor", None, "400d")
    await refused("asset type 'motor'", True, "400d", None)  # motor: history 400d, aggs 400d
    assert db.retention.tenant_override("acme") is None  # refused: nothing stored
    tenant = await policies.set_tenant("acme", "30d", None)
    assert tenant.asset_types[0].effective.history == "30d"
    await refused("expire before the readings", False, None, "30d")
    assert db.retention.asset_type_overrides("acme") == {"motor": RetentionOverride(None, "400d")}
    # The tenant's own aggregates and the platform's history.
    await refused("tenant: aggregates kept 1d", True, None, "1d")
    # The tenant may not make motor's inherited aggregates outlive nothing either.
    await policies.set_asset_type("acme", "motor", None, None)
    await policies.set_tenant("acme", "30d", "365d")
    await refused("asset type 'motor'", False, "400d", None)


def expected_hours(
    readings: list[Reading], name: str, start: int, end: int, bucket: int
) -> list[tuple[int, float | None, float | None, float | None, int]]:
    """(bucket, mean, min, max, count) of `name` computed here from the readings themselves."""
    by_bucket: dict[int, list[Any]] = {}
    for r in readings:
        if name in r.values and start <= r.ts < end:
            by_bucket.setdefault(r.ts - r.ts % bucket, []).append(r.values[name])
    result = []
    for b, values in sorted(by_bucket.items()):
        numbers = [float(v) for v in values if not isinstance(v, str)]
        if numbers:
            result.append((b, sum(numbers) / len(numbers), min(numbers), max(numbers), len(values)))
        else:
            result.append((b, None, None, None, len(values)))
    return result


def bucket_tuples(buckets: list[Any]) -> list[tuple[int, Any, Any, Any, int]]:
    return [(b.start_ms, b.avg, b.min, b.max, b.count) for b in buckets]


async def test_expired_readings_leave_hourly_aggregates_that_history_adds_in(
    db: Database,
) -> None:
    import random

    from fogline.domain.retention import RetentionOverride

    store = seeded(db).telemetry
    db.retention.set_tenant_override("acme", RetentionOverride(aggregates="365d"))
    rng = random.Random(7)
    cutoff = NOW - 2 * DAY
    start = cutoff - cutoff % HOUR - 5 * HOUR  # five whole hours and a part before the cutoff
    readings = [
        reading(
            ts,
            temperature=round(rng.uniform(-20, 120), 3),
            rpm=rng.randint(0, 3000),
            running=rng.random() < 0.3,
            state=rng.choice(["run", "idle"]),
        )
        for ts in sorted(rng.sample(range(start, cutoff + 3 * HOUR), 400))
    ]
    store.commit_batch(readings, [], [], None)
    kinds = {
        "temperature": ValueKind.NUMBER,
        "rpm": ValueKind.NUMBER,
        "running": ValueKind.BOOL,
        "state": ValueKind.TEXT,
    }
    before = store.downsample_with_aggregates("acme", "m1", kinds, start, NOW, HOUR)
    assert (before.from_raw, before.from_aggregates) == (True, False)

    job = retention_job(db, "2d", batch=7)  # hours are split over several batches
    report = await job.run_once()
    expired = [r for r in readings if r.ts < cutoff]
    assert report.readings_deleted == len(expired) and report.aggregates_written > 0
    assert db.telemetry.count_readings("acme") == len(readings) - len(expired)

    # A late reading of an hour already rolled up is added to it on the next run.
    late = reading(start + 17, temperature=500.0, rpm=-1, running=True, state="late")
    store.commit_batch([late], [], [], None)
    readings.append(late)
    await job.run_once()

    for bucket in (HOUR, 2 * HOUR):
        after = store.downsample_with_aggregates("acme", "m1", kinds, start, NOW, bucket)
        assert (after.from_raw, after.from_aggregates) == (True, True)
        for name in ("temperature", "rpm", "running"):
            got = bucket_tuples(after.series[name])
            want = expected_hours(readings, name, start, NOW, bucket)
            assert [g[0] for g in got] == [w[0] for w in want]
            assert [g[4] for g in got] == [w[4] for w in want]
            for g, w in zip(got, want, strict=True):
                assert g[1:4] == pytest.approx(w[1:4], rel=1e-9), (name, g, w)
        states = bucket_tuples(after.series["state"])
        assert states == expected_hours(readings, "state", start, NOW, bucket)
    # Buckets that are not whole hours come from the raw readings alone.
    raw_only = store.downsample_with_aggregates("acme", "m1", kinds, start, NOW, 10 * 60_000)
    assert (raw_only.from_raw, raw_only.from_aggregates) == (True, False)
    assert sum(b.count for b in raw_only.series["rpm"]) == db.telemetry.count_readings("acme")
    # Only aggregates past the range's start: hourly alone.
    old = store.downsample_with_aggregates("acme", "m1", kinds, start, start + 2 * HOUR, HOUR)
    assert (old.from_raw, old.from_aggregates) == (False, True)

    # Aggregates go once older than their own retention; deleting the asset takes the rest.
    await retention_job(db, "2d", "forever").run_once()
    db.retention.set_tenant_override("acme", RetentionOverride(aggregates="2d"))
    kept = await retention_job(db, "1d").run_once()
    assert kept.aggregates_deleted > 0
    gone = store.downsample_with_aggregates("acme", "m1", kinds, 0, cutoff - HOUR, HOUR)
    assert gone.from_aggregates is False
    db.assets.delete_asset("acme", "m1")
    with db.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM telemetry_aggregates")).scalar_one() == 0


def test_model_dead_letters_are_kept_paged_and_counted_per_reason(db: Database) -> None:
    from fogline.domain.lifecycle import ModelEvent, ModelState
    from fogline.domain.models import LossReason, ModelDeadLetter, TemplateColumn

    seeded(db)
    columns = [TemplateColumn("input", "temperature", False)]  # type: ignore[arg-type]
    model = db.models.create_model("acme", "m", "1.0.0", None, {}, columns, None)
    for event in (ModelEvent.DEPLOY, ModelEvent.DEPLOYED, ModelEvent.DEGRADE):
        moved = db.models.transition("acme", "m", "1.0.0", event, "crashed")
    assert (moved.state, moved.state_reason) == (ModelState.DEGRADED, "crashed")

    def letter(reason: LossReason, readings: int, **more: object) -> ModelDeadLetter:
        return ModelDeadLetter("acme", model.id, 1_000, reason, "why", readings, **more)  # type: ignore[arg-type]

    db.deployments.record_dead_letters(
        [
            letter(LossReason.TIMEOUT, 40, request_id="r1", payload='[{"ts": 1}]'),
            letter(LossReason.OVERLOAD, 1000),
            letter(LossReason.TIMEOUT, 2, request_id="r2"),
            letter(
                LossReason.REFUSED_OUTPUT,
                0,
                detail_code="not-finite",
                asset="m1",
                ts=5,
                column="score",
                payload="NaN",
            ),
        ]
    )
    db.deployments.record_dead_letters([])
    assert db.deployments.dead_letter_counts(model.id) == {
        "timeout": {"records": 2, "readings": 42},
        "dropped-on-overload": {"records": 1, "readings": 1000},
        "refused-output": {"records": 1, "readings": 0},
    }
    newest = db.deployments.dead_letters(model.id, limit=2)
    assert [s.letter.reason_code for s in newest] == [
        LossReason.REFUSED_OUTPUT,
        LossReason.TIMEOUT,
    ]
    refused = newest[0].letter
    assert (refused.detail_code, refused.asset, refused.ts, refused.column, refused.payload) == (
        "not-finite",
        "m1",
        5,
        "score",
        "NaN",
    )
    older = db.deployments.dead_letters(model.id, limit=10, before_id=newest[-1].id)
    assert [(s.letter.readings, s.letter.request_id) for s in older] == [(1000, None), (40, "r1")]
    assert db.deployments.dead_letter_counts(model.id + 999) == {}


def test_devices_are_created_in_bulk_all_or_none(db: Database) -> None:
    seeded(db)
    devices = db.devices
    devices.create_device(Device("acme", "d0", "D0"), "hash-0")
    batch = [(Device("acme", f"d{i}", f"D{i}", labels={"site": "n"}), f"hash-{i}") for i in (1, 2)]
    devices.create_devices(batch)
    assert [d.id for d in devices.list_devices("acme")] == ["d0", "d1", "d2"]
    assert devices.get_device("acme", "d2").labels == {"site": "n"}
    assert devices.device_password_hash("acme", "d1") == "hash-1"
    assert devices.existing_device_ids("acme", ["d1", "d9", "d0"]) == {"d0", "d1"}
    assert devices.existing_device_ids("other", ["d1"]) == set()
    # One id taken: none of the batch is created.
    with pytest.raises(AlreadyExists):
        devices.create_devices(
            [(Device("acme", "d3", "D3"), "h"), (Device("acme", "d1", "x"), "h")]
        )
    assert [d.id for d in devices.list_devices("acme")] == ["d0", "d1", "d2"]
    with pytest.raises(NotFound):
        devices.create_devices([(Device("nobody", "d1", "x"), "h")])


def test_security_counts_add_up_per_user_and_kind(db: Database) -> None:
    from fogline.store.security import SecurityCount

    store = db.security
    store.add_security_counts(
        [
            SecurityCount("acme.d1", "publish_denied", "acme", "d1", 3, T0 + 10, T0 + 20, "s.a"),
            SecurityCount("acme.d1", "login_failed", "acme", "d1", 1, T0, T0, None, "h:1"),
            SecurityCount("stranger", "login_failed", "", None, 2, T0, T0 + 5, None, "h:2"),
        ]
    )
    # Later (and an earlier first refusal, arriving late): counts add, times widen.
    store.add_security_counts(
        [SecurityCount("acme.d1", "publish_denied", "acme", "d1", 200, T0, T0 + 99, None, "h:3")]
    )
    d1 = {c.kind: c for c in store.device_security_counts("acme", "d1")}
    assert set(d1) == {"publish_denied", "login_failed"}
    published = d1["publish_denied"]
    assert (published.count, published.first_seen_ms, published.last_seen_ms) == (
        203,
        T0,
        T0 + 99,
    )
    assert (published.last_subject, published.last_address) == ("s.a", "h:3")
    assert store.device_security_counts("acme", "d2") == []
    assert store.security_totals() == {"publish_denied": 203, "login_failed": 3}
    assert store.security_totals("acme") == {"publish_denied": 203, "login_failed": 1}
    assert [c.username for c in store.security_counts()] == ["acme.d1", "stranger", "acme.d1"]
    assert [c.device for c in store.security_counts("")] == [None]
    store.forget_security_device("acme", "d1")
    assert store.device_security_counts("acme", "d1") == []
    assert store.security_totals("acme") == {"publish_denied": 203, "login_failed": 1}
    assert store.security_user_known("stranger") and not store.security_user_known("nobody")
    assert store.unknown_security_users() == 2  # stranger, and acme.d1 now no device's


async def test_made_up_user_names_are_capped_in_the_store_and_in_the_log(
    db: Database, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anyone who reaches the MQTT port can try new user names: they are kept one by one up
    to a cap, then folded into one; the log has one line per kind for all of them."""
    from fogline.bus.events import SecurityEvent
    from fogline.fleet import security
    from fogline.fleet.security import OTHER_UNKNOWN_USERS, SecurityLedger

    monkeypatch.setattr(security, "MAX_UNKNOWN_USERS", 20)
    ledger = SecurityLedger(db.security, db.devices)
    caplog.set_level(logging.WARNING, logger="fogline.fleet.security")
    for i in range(50):
        event = SecurityEvent(
            tenant="_none", kind="login_failed", username=f"spray-{i}", count=1, first_at=T0
        )
        await ledger.record(event)
    counts = db.security.security_counts()
    assert len(counts) == 21
    assert {c.username for c in counts} == {f"spray-{i}" for i in range(20)} | {OTHER_UNKNOWN_USERS}
    assert db.security.security_totals() == {"login_failed": 50}
    assert len([r for r in caplog.records if r.getMessage() == "security.refused"]) == 1
