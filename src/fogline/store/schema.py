"""The current shape of every table, for queries. Migrations (`migrations.py`) build it.

Timestamps are integer epoch milliseconds. JSON documents (attributes, labels, hardware) are
stored as text so SQLite and PostgreSQL behave the same.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite gives autoincrement only to INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for growth.
AutoId = BigInteger().with_variant(Integer(), "sqlite")

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("tenant_id", String(64), nullable=True),
    Column("name", String(200), nullable=False),
    Column("role", String(16), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

asset_types = Table(
    "asset_types",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

telemetry_definitions = Table(
    "telemetry_definitions",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("asset_type_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("dtype", String(16), nullable=False),
    Column("unit", String(32), nullable=True),
    Column("min_value", Float(53), nullable=True),
    Column("max_value", Float(53), nullable=True),
    Column("description", Text, nullable=True),
    PrimaryKeyConstraint("tenant_id", "asset_type_id", "name"),
    ForeignKeyConstraint(
        ["tenant_id", "asset_type_id"],
        ["asset_types.tenant_id", "asset_types.id"],
        ondelete="CASCADE",
    ),
)

attribute_definitions = Table(
    "attribute_definitions",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("asset_type_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("position", Integer, nullable=False),
    Column("dtype", String(16), nullable=False),
    Column("required", Boolean, nullable=False),
    Column("default_json", Text, nullable=True),
    Column("description", Text, nullable=True),
    PrimaryKeyConstraint("tenant_id", "asset_type_id", "name"),
    ForeignKeyConstraint(
        ["tenant_id", "asset_type_id"],
        ["asset_types.tenant_id", "asset_types.id"],
        ondelete="CASCADE",
    ),
)

assets = Table(
    "assets",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("asset_type_id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("attributes_json", Text, nullable=False),
    Column("labels_json", Text, nullable=False),
    Column("site", String(200), nullable=True),
    Column("latitude", Float(53), nullable=True),
    Column("longitude", Float(53), nullable=True),
    Column("altitude", Float(53), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    ForeignKeyConstraint(
        ["tenant_id", "asset_type_id"], ["asset_types.tenant_id", "asset_types.id"]
    ),
)

devices = Table(
    "devices",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("name", String(200), nullable=False),
    Column("password_hash", String(100), nullable=False),
    Column("hardware_json", Text, nullable=False),
    Column("firmware", String(100), nullable=True),
    Column("labels_json", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

# One series per asset: a reading is a row holding all the values the asset reported at one
# time, as a JSON object. One row per reading rather than per value keeps the historian's writes
# four to ten times fewer, and a time window of several telemetry is one range scan.
telemetry_series = Table(
    "telemetry_series",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("asset_id", String(64), nullable=False),
    UniqueConstraint("tenant_id", "asset_id", name="uq_telemetry_series_asset"),
)

# One row per (series, timestamp): a redelivered reading lands on its own key and merges into
# itself, which is what makes the historian's at-least-once delivery store each reading once.
readings = Table(
    "readings",
    metadata,
    Column("series_id", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("values_json", Text, nullable=False),
    PrimaryKeyConstraint("series_id", "ts"),
    sqlite_with_rowid=False,
)

# The newest value of each telemetry of each asset, kept as readings are committed, so that
# "latest" never scans history (a telemetry may not be in every reading). `source` (schema
# version 7) says who writes the telemetry: 'device' once any device has written it on that
# asset (and from then on), else 'model'. A model's value never replaces a device's.
latest_values = Table(
    "latest_values",
    metadata,
    Column("series_id", BigInteger, nullable=False),
    Column("name", String(64), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("value_json", Text, nullable=False),
    Column("source", String(8), nullable=False, server_default="device"),
    PrimaryKeyConstraint("series_id", "name"),
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    # A device id, or a model version's outputs: "model:<name>@<version>" (up to 135).
    Column("device_id", String(200), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("stream_seq", BigInteger, nullable=True),
    Column("item", Integer, nullable=True),
    Column("asset_id", String(200), nullable=True),
    Column("telemetry", String(200), nullable=True),
    Column("reason_code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=True),
    # One device's or one model version's dead letters (version 7), without a tenant scan.
    Index("ix_dead_letters_source", "tenant_id", "device_id", "id"),
)

device_stats = Table(
    "device_stats",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("messages_total", BigInteger, nullable=False),
    Column("values_total", BigInteger, nullable=False),
    Column("dead_letters_total", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "device_id"),
)

# Where the historian got to in the telemetry stream, committed with the data it wrote.
ingest_offsets = Table(
    "ingest_offsets",
    metadata,
    Column("consumer", String(100), primary_key=True),
    Column("stream_id", String(100), nullable=False),
    Column("last_seq", BigInteger, nullable=False),
)


# -- model management (schema version 2) ------------------------------------------------------
# The relational schema of the model-management design Fogline follows: the registry of
# container credentials, models, the template mappings a manifest declares (its inputs and
# outputs), and the concrete mappings of those to telemetry of assets or of asset types.

model_registries = Table(
    "model_registries",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("registry", String(255), nullable=False),
    Column("username", String(255), nullable=True),
    Column("password_sealed", Text, nullable=True),  # encrypted (store/secrets.py)
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

models = Table(
    "models",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("version", String(64), nullable=False),
    Column("description", Text, nullable=True),
    Column("state", String(16), nullable=False),
    Column("state_reason", Text, nullable=True),
    Column("manifest_json", Text, nullable=False),  # without secrets
    Column("registry_id", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("updated_at", BigInteger, nullable=False),
    UniqueConstraint("tenant_id", "name", "version", name="uq_models_version"),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

template_mappings = Table(
    "template_mappings",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("model_id", BigInteger, nullable=False),
    Column("direction", String(8), nullable=False),  # input | output
    Column("position", Integer, nullable=False),
    Column("data_column_name", String(64), nullable=False),
    Column("read_as_string", Boolean, nullable=False),
    UniqueConstraint("model_id", "direction", "data_column_name", name="uq_template_column"),
    ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
)


def _column_mappings(name: str, target: str) -> Table:
    """Template columns bound to telemetry of a target: an asset, or an asset type."""
    return Table(
        name,
        metadata,
        Column("id", AutoId, primary_key=True, autoincrement=True),
        Column("model_id", BigInteger, nullable=False),
        Column("template_mapping_id", BigInteger, nullable=False),
        Column(target, String(64), nullable=False),
        Column("telemetry", String(64), nullable=False),
        ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        ForeignKeyConstraint(["template_mapping_id"], ["template_mappings.id"], ondelete="CASCADE"),
    )


model_mappings = _column_mappings("model_mappings", "asset_id")
asset_type_mappings = _column_mappings("asset_type_mappings", "asset_type_id")

model_events = Table(
    "model_events",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("model_id", BigInteger, nullable=False),
    Column("event", String(32), nullable=False),
    Column("from_state", String(16), nullable=True),
    Column("to_state", String(16), nullable=False),
    Column("reason", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
)


# -- sagas (schema version 4) --------------------------------------------------------------
# Long-running work of any owner (a model's deploy, stop, update; rollouts and pipelines next):
# where each owner's latest saga stands, and every step it took, so a restart knows where it was.

sagas = Table(
    "sagas",
    metadata,
    Column("owner", String(16), nullable=False),  # model | ...
    Column("owner_id", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(32), nullable=False),  # deploy | stop | update | restore | ...
    Column("run", Integer, nullable=False),  # counts this owner's sagas; its steps carry it
    Column("status", String(16), nullable=False),  # running | compensating | done | failed
    Column("step", String(32), nullable=True),  # the step last recorded
    Column("detail", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("owner", "owner_id"),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

saga_steps = Table(
    "saga_steps",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("owner", String(16), nullable=False),
    Column("owner_id", String(64), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("run", Integer, nullable=True),  # null: kept beside the sagas (health, recover)
    Column("saga", String(32), nullable=False),
    Column("step", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # started | done | failed | compensated
    Column("attempt", Integer, nullable=False),
    Column("detail", Text, nullable=True),
    Column("at", BigInteger, nullable=False),
    Index("ix_saga_steps_owner", "owner", "owner_id"),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

# -- deployments (schema version 3, saga columns moved to `sagas` in version 4) ---------------
# What the runtime started for a model (pid, port, ...), so a restart can find and stop it.

model_deployments = Table(
    "model_deployments",
    metadata,
    Column("model_id", BigInteger, primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("runtime_json", Text, nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
)

# Score requests an asynchronous model never answered in time.
stale_requests = Table(
    "stale_requests",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("model_id", BigInteger, nullable=False, index=True),
    Column("request_id", String(64), nullable=False),
    Column("readings", Integer, nullable=False),
    Column("sent_at", BigInteger, nullable=False),
    Column("timed_out_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
)


# What a model's companion accepted but could not score, or a model gave but could not be
# written (schema version 6): one row per failed call or per batch of drops.
model_dead_letters = Table(
    "model_dead_letters",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("model_id", BigInteger, nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("at", BigInteger, nullable=False),
    Column("reason_code", String(32), nullable=False),
    Column("detail_code", String(32), nullable=True),
    Column("reason", Text, nullable=False),
    Column("readings", Integer, nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("asset_id", String(64), nullable=True),
    Column("ts", BigInteger, nullable=True),
    Column("output_column", String(64), nullable=True),
    Column("payload", Text, nullable=True),
    ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
    Index("ix_model_dead_letters_model", "model_id", "id"),
)

# -- retention (schema version 5) -------------------------------------------------------------
# How long each tenant's history is kept, where it overrides the platform's default, and where
# an asset type overrides its tenant. A part left null is inherited; text as the caller gave
# it ("90d", "forever", "none"), checked by `domain.retention`.

tenant_retention = Table(
    "tenant_retention",
    metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("history", String(32), nullable=True),
    Column("aggregates", String(32), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    ForeignKeyConstraint(["tenant_id"], ["tenants.id"], ondelete="CASCADE"),
)

asset_type_retention = Table(
    "asset_type_retention",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("asset_type_id", String(64), nullable=False),
    Column("history", String(32), nullable=True),
    Column("aggregates", String(32), nullable=True),
    Column("updated_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "asset_type_id"),
    ForeignKeyConstraint(
        ["tenant_id", "asset_type_id"],
        ["asset_types.tenant_id", "asset_types.id"],
        ondelete="CASCADE",
    ),
)

# Hourly roll-ups of readings the retention job deleted: each reading is counted either here
# or in `readings`, never in both (the roll-up and the delete share a transaction), so a query
# adds the two. The sum, not the mean, is kept, so that roll-ups of one hour made in several
# batches add up exactly.
telemetry_aggregates = Table(
    "telemetry_aggregates",
    metadata,
    Column("series_id", BigInteger, nullable=False),
    Column("bucket_ts", BigInteger, nullable=False),
    Column("name", String(64), nullable=False),
    Column("value_count", BigInteger, nullable=False),  # every value, text included
    Column("numeric_count", BigInteger, nullable=False),  # numbers and booleans (as 0/1)
    Column("value_sum", Float(53), nullable=False),
    Column("value_min", Float(53), nullable=True),
    Column("value_max", Float(53), nullable=True),
    PrimaryKeyConstraint("series_id", "bucket_ts", "name"),
    sqlite_with_rowid=False,
)

# What nats-server refused (schema version 8): one row per (user name, kind) with the count,
# the first and the last time, and the last subject and client address. `device_id` is set when
# the user name was a device's at the last refusal; other names (an unknown user trying to log
# in) are counted under their own name, with no tenant ('') when the name has none.
security_events = Table(
    "security_events",
    metadata,
    Column("username", String(200), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=True),
    Column("count", BigInteger, nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("last_subject", String(200), nullable=True),
    Column("last_address", String(64), nullable=True),
    PrimaryKeyConstraint("username", "kind"),
    Index("ix_security_events_device", "tenant_id", "device_id"),
)
