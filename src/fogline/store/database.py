"""One object that opens, migrates and hands out the repositories of a database."""

from __future__ import annotations

from sqlalchemy import Engine

from fogline.store.assets import SqlAssetStore
from fogline.store.deployments import SqlDeploymentStore
from fogline.store.devices import SqlDeviceStore
from fogline.store.engine import open_engine
from fogline.store.migrations import migrate
from fogline.store.models import SqlModelMappings, SqlModelStore
from fogline.store.retention import SqlRetentionStore
from fogline.store.sagas import SqlSagaStore
from fogline.store.security import SqlSecurityStore
from fogline.store.telemetry import SqlTelemetryStore
from fogline.store.tenants import SqlTenantStore


class Database:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.tenants = SqlTenantStore(engine)
        self.assets = SqlAssetStore(engine)
        self.devices = SqlDeviceStore(engine)
        self.telemetry = SqlTelemetryStore(engine)
        self.models = SqlModelStore(engine)
        self.model_mappings = SqlModelMappings(engine)
        self.deployments = SqlDeploymentStore(engine)
        self.sagas = SqlSagaStore(engine)
        self.retention = SqlRetentionStore(engine)
        self.security = SqlSecurityStore(engine)

    @classmethod
    def open(cls, url: str) -> Database:
        engine = open_engine(url)
        migrate(engine)
        return cls(engine)

    @classmethod
    def connect(cls, url: str) -> Database:
        """A database another process has already migrated."""
        return cls(open_engine(url))

    def ping(self) -> None:
        """Raises unless the database answers a query."""
        with self.engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def close(self) -> None:
        self.engine.dispose()
