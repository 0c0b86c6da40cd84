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

series = Table(
    "series",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("asset_id", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    UniqueConstraint("tenant_id", "asset_id", "name", name="uq_series_key"),
)

# One row per (series, timestamp): a redelivered reading lands on its own key and is ignored,
# which is what makes the historian's at-least-once delivery store each reading once.
readings = Table(
    "readings",
    metadata,
    Column("series_id", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("num", Float(53), nullable=True),
    Column("str", Text, nullable=True),
    PrimaryKeyConstraint("series_id", "ts"),
    sqlite_with_rowid=False,
)

dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", AutoId, primary_key=True, autoincrement=True),
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(64), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("stream_seq", BigInteger, nullable=True),
    Column("item", Integer, nullable=True),
    Column("asset_id", String(200), nullable=True),
    Column("telemetry", String(200), nullable=True),
    Column("reason_code", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("payload", Text, nullable=True),
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
