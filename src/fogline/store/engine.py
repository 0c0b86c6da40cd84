"""Opening a database from a URL: SQLite under the data dir by default, PostgreSQL on request."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError, InterfaceError, OperationalError

from fogline.store.errors import DatabaseUnavailable, DatabaseUrlInvalid

CONNECT_TIMEOUT_S = 5


def normalise_url(url: str) -> str:
    """Plain `postgresql://` URLs (what users copy from their provider) use psycopg 3."""
    for prefix in ("postgresql://", "postgres://", "postgresql+psycopg2://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def open_engine(url: str) -> Engine:
    url = normalise_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DatabaseUrlInvalid(f"database URL {url!r} is not a URL: {exc}") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            parsed, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8
        )
        event.listen(engine, "connect", _sqlite_pragmas)
    elif backend == "postgresql":
        engine = create_engine(
            parsed,
            pool_size=8,
            max_overflow=8,
            pool_pre_ping=True,
            # A server that takes connections in but never answers (frozen, or a dropped
            # route) fails a connect in seconds instead of holding a request for good.
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
        )
    else:
        raise DatabaseUrlInvalid(
            f"database URL scheme {backend!r} is not supported: use sqlite:/// or postgresql://"
        )
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise DatabaseUnavailable(f"cannot open the database {parsed!r}: {reason}") from None
    event.listen(engine, "handle_error", _unavailable_as_typed_error)
    return engine


# SQLite words for "cannot be used now" (locked past the busy timeout, disk full or failing);
# its other OperationalErrors (a syntax error, a missing table) are faults of ours.
_SQLITE_UNAVAILABLE = ("locked", "busy", "disk", "unable to open", "i/o", "readonly")


def _unavailable_as_typed_error(context: ExceptionContext) -> None:
    """Every store call that meets a database away (refused or dropped connection, a server
    shutting down, a lock or timeout) raises `DatabaseUnavailable`, the typed error the API
    answers with 503 and the CLI with exit 6: mapped here once for every repository. The
    message is the driver's first line, never SQLAlchemy's rendering with the statement and
    its parameters (tenants' data)."""
    if context.is_pre_ping:
        return  # the pool's own liveness probe: it must see the driver's error to reconnect
    error = context.sqlalchemy_exception
    original = context.original_exception
    if not context.is_disconnect and not isinstance(error, OperationalError | InterfaceError):
        return
    reason = str(original).strip().splitlines()[0] if str(original).strip() else ""
    our_fault = not any(word in reason.lower() for word in _SQLITE_UNAVAILABLE)
    if context.dialect.name == "sqlite" and not context.is_disconnect and our_fault:
        return
    raise DatabaseUnavailable(f"the database is unavailable: {reason or type(original).__name__}")


def _sqlite_pragmas(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: the historian acks telemetry only after commit, so a commit must survive power loss.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
