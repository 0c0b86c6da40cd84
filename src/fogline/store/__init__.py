"""SQL storage: schema, migrations and repositories for SQLite and PostgreSQL alike."""
