"""Backing up a whole platform into one archive, and restoring it into a fresh data dir.

The archive (tar.gz) holds `manifest.json` first (Fogline and schema version, the database's
kind, when, and every other member with its size and sha256), then `database/<table>.jsonl`
(a logical dump of every table, see `store/dump.py`: SQLite and PostgreSQL alike), then
`data/...`: the data dir's files (JetStream's store with its streams, KV buckets and readings
not yet historized; the secret key; client.json; model packages...).

Both need the platform stopped: JetStream's files are a consistent copy only while nats-server
is not writing them. They hold the data dir's platform lock for their whole run, so a platform
cannot start under them, and one running refuses them. A restore is made in a directory beside
the target and renamed into place once whole, its database loaded in one transaction: a bad
archive or a failure leaves the target as it was."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import shutil
import tarfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from fogline import __version__
from fogline.app.lock import LOCK_FILE, DataDirLock, PlatformAlreadyRunning
from fogline.app.settings import Settings
from fogline.domain.errors import ConfigurationError, InvalidInput, NotFound, Problem
from fogline.store.dump import TableDump, dump_table, load_dump, read_rows, reflected
from fogline.store.dump import stored_version as database_version
from fogline.store.engine import normalise_url, open_engine
from fogline.store.migrations import SCHEMA_VERSION

FORMAT = "fogline-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_CHUNK = 1024 * 1024

# Not part of a platform's state: the lock, the SQLite files (dumped logically instead), the
# models' run directories (made afresh at each start), nats-server's config (written at each
# start from the database) and its logs.
_SKIPPED_TOP = {LOCK_FILE, "runtimes", ".write-test"}
_SKIPPED_NATS = ("nats/nats-server.conf", "nats/nats-server.tmp", "nats/nats-server.log")


class BackupRefused(ConfigurationError):
    """A backup or restore that cannot be done as asked; nothing was changed."""


class CorruptBackup(InvalidInput):
    """The archive is damaged, or not a Fogline backup."""


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    size: int
    manifest: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "archive": str(self.path),
            "size": self.size,
            "fogline_version": m["fogline_version"],
            "schema_version": m["schema_version"],
            "database": m["database"]["kind"],
            "tables": len(m["database"]["tables"]),
            "rows": sum(t["rows"] for t in m["database"]["tables"]),
            "files": sum(1 for c in m["contents"] if c["path"].startswith("data/")),
            "created_at": m["created_at"],
        }


# --- backup ------------------------------------------------------------------------------


def backup(settings: Settings, out: Path) -> BackupSummary:
    data_dir = settings.data_dir.resolve()
    out = out.resolve()
    if not data_dir.is_dir():
        raise NotFound(f"there is no data dir {data_dir} to back up")
    if out.is_relative_to(data_dir):
        raise BackupRefused(f"write the backup outside the data dir it saves ({data_dir})")
    if out.is_dir():
        raise BackupRefused(f"{out} is a directory: give the archive's file name")
    with _stopped_platform(data_dir, "back it up"):
        engine = open_engine(settings.effective_database_url)
        try:
            return _write_backup(engine, settings, data_dir, out)
        finally:
            engine.dispose()


def _write_backup(engine: Engine, settings: Settings, data_dir: Path, out: Path) -> BackupSummary:
    with engine.connect() as conn:
        version = database_version(conn)
    if version is None:
        raise BackupRefused(f"the database of {data_dir} holds no Fogline platform")
    if version != SCHEMA_VERSION:
        raise BackupRefused(
            f"the database is at schema version {version}, this Fogline's is {SCHEMA_VERSION}: "
            "back it up with the Fogline that runs it (or start the platform once with this "
            "one, which migrates it)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(_private_tempdir(out.parent, f".{out.name}.staging-"))
    partial = out.parent / f".{out.name}.partial-{secrets.token_hex(4)}"
    try:
        contents: list[dict[str, Any]] = []
        tables: list[dict[str, Any]] = []
        dumps: list[tuple[str, Path]] = []
        snapshot = {"isolation_level": "REPEATABLE READ"} if engine.dialect.name != "sqlite" else {}
        # One snapshot of every table (SQLite's transaction is one already).
        with engine.connect().execution_options(**snapshot) as conn, conn.begin():
            for table in reflected(conn):
                path = staging / f"{table.name}.jsonl"
                with path.open("wb") as raw:
                    hashing = _Hashing(raw)
                    dump = dump_table(conn, table, hashing)
                name = f"database/{table.name}.jsonl"
                tables.append({"name": dump.name, "columns": dump.columns, "rows": dump.rows})
                contents.append({"path": name, "size": hashing.size, "sha256": hashing.hex()})
                dumps.append((name, path))
        files = list(_platform_files(data_dir, _sqlite_file(settings)))
        for rel, path in files:
            size, digest = _file_digest(path)
            contents.append({"path": f"data/{rel}", "size": size, "sha256": digest})
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fogline_version": __version__,
            "schema_version": SCHEMA_VERSION,
            "database": {"kind": engine.dialect.name, "tables": tables},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "data_dir": str(data_dir),
            "contents": contents,
        }
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w:gz", compresslevel=6) as tar:
                document = json.dumps(manifest, indent=2).encode()
                tar.addfile(_member(MANIFEST, len(document)), io.BytesIO(document))
                for name, path in dumps:
                    _add_file(tar, name, path)
                for rel, path in files:
                    _add_file(tar, f"data/{rel}", path)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, out)
        return BackupSummary(out, out.stat().st_size, manifest)
    finally:
        partial.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)


def _platform_files(data_dir: Path, sqlite_file: Path | None) -> Iterator[tuple[str, Path]]:
    """The data dir's files that make up the platform, as (path in the dir, path)."""
    skipped = {sqlite_file, *(Path(f"{sqlite_file}{s}") for s in ("-wal", "-shm", "-journal"))}
    for directory, dirs, names in os.walk(data_dir):
        here = Path(directory)
        if here == data_dir:
            dirs[:] = [d for d in dirs if d not in _SKIPPED_TOP]
        dirs.sort()
        for name in sorted(names):
            path = here / name
            rel = path.relative_to(data_dir).as_posix()
            if (here == data_dir and name in _SKIPPED_TOP) or path in skipped:
                continue
            if rel.startswith(_SKIPPED_NATS) or not path.is_file() or path.is_symlink():
                continue
            yield rel, path


def _sqlite_file(settings: Settings) -> Path | None:
    url = make_url(normalise_url(settings.effective_database_url))
    if url.get_backend_name() != "sqlite" or not url.database:
        return None
    return Path(url.database).resolve()


# --- restore -----------------------------------------------------------------------------


def read_manifest(archive: Path) -> dict[str, Any]:
    """The archive's manifest, checked; the rest of the archive is checked as it is restored."""
    with _open_archive(archive) as tar:
        return _manifest(archive, tar)


def restore(settings: Settings, archive: Path) -> BackupSummary:
    target = settings.data_dir.resolve()
    archive = archive.resolve()
    if not archive.is_file():
        raise NotFound(f"there is no backup file {archive}")
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise BackupRefused(
            f"the data dir {target} is not empty: restore into a new or empty data dir "
            "(--data-dir), or move this one away first"
        )
    os.umask(0o077)  # what the restore makes is the platform's user's only, as `up` makes it
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(_private_tempdir(target.parent, f".{target.name}.restoring-"))
    lock = DataDirLock(staging)
    lock.acquire()  # a new directory: nobody else holds it
    loaded: Engine | None = None
    try:
        with _open_archive(archive) as tar:
            manifest = _manifest(archive, tar)
            dumps = staging / ".restore-database"
            dumps.mkdir()
            _extract(archive, tar, manifest, staging, dumps)
        sqlite_default = settings.database_url is None
        url = f"sqlite:///{staging / 'fogline.db'}" if sqlite_default else settings.database_url
        assert url is not None
        engine = open_engine(url)
        try:
            tables = [
                TableDump(t["name"], list(t["columns"]), int(t["rows"]))
                for t in manifest["database"]["tables"]
            ]

            def rows_of(dump: TableDump) -> Iterator[list[Any]]:
                with (dumps / f"{dump.name}.jsonl").open("rb") as lines:
                    yield from read_rows(lines)

            load_dump(engine, tables, rows_of)
            if not sqlite_default:
                loaded = engine
        finally:
            if loaded is None:
                engine.dispose()
        shutil.rmtree(dumps)
        lock.release()
        try:
            # rename(2) takes an empty directory's place, and fails if it is not empty (a
            # platform started there meanwhile): then nothing of the restore stays.
            os.rename(staging, target)
        except OSError as exc:
            raise BackupRefused(
                f"cannot put the restored platform in place at {target}: {exc.strerror or exc}"
            ) from None
        loaded = None
        return BackupSummary(archive, archive.stat().st_size, manifest)
    finally:
        lock.release()
        if loaded is not None:  # loaded into a database the restore now leaves empty again
            _empty(loaded)
            loaded.dispose()
        shutil.rmtree(staging, ignore_errors=True)


def _empty(engine: Engine) -> None:
    from sqlalchemy import MetaData

    with contextlib.suppress(Exception), engine.begin() as conn:
        metadata = MetaData()
        metadata.reflect(conn)
        metadata.drop_all(conn)


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        with tarfile.open(archive, mode="r|gz") as tar:
            yield tar
    except (tarfile.TarError, EOFError, zlib.error, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and not _is_format_error(exc):
            raise
        raise CorruptBackup(
            f"the backup {archive} is damaged or not a Fogline backup",
            [Problem("archive", str(exc) or type(exc).__name__)],
        ) from None


def _is_format_error(exc: OSError) -> bool:
    return exc.errno is None  # gzip's "not a gzipped file" and the like, not a disk's error


def _manifest(archive: Path, tar: tarfile.TarFile) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isfile():
        raise _corrupt(archive, f"its first member is not {MANIFEST}")
    handle = tar.extractfile(first)
    assert handle is not None
    try:
        manifest = json.loads(handle.read())
    except ValueError:
        raise _corrupt(archive, f"{MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _corrupt(archive, f"{MANIFEST} is not a Fogline backup's")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupRefused(
            f"the backup {archive} is in format {manifest.get('format_version')}, this "
            f"Fogline reads format {FORMAT_VERSION}"
        )
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BackupRefused(
            f"the backup {archive} holds a database at schema version {version} (Fogline "
            f"{manifest.get('fogline_version')}); this Fogline ({__version__}) restores schema "
            f"version {SCHEMA_VERSION} only: restore it with Fogline "
            f"{manifest.get('fogline_version')}, start it once with this Fogline (which "
            "migrates it), and back it up again"
        )
    try:
        for entry in manifest["contents"]:
            _safe_path(archive, entry["path"])
            if not isinstance(entry["size"], int) or not isinstance(entry["sha256"], str):
                raise TypeError(entry)
        for table in manifest["database"]["tables"]:
            columns_ok = all(isinstance(c, str) for c in table["columns"])
            if not (isinstance(table["name"], str) and isinstance(table["rows"], int)):
                raise TypeError(table)
            if not columns_ok:
                raise TypeError(table)
    except (KeyError, TypeError):
        raise _corrupt(archive, f"{MANIFEST} lacks what a backup's manifest holds") from None
    return manifest


def _extract(
    archive: Path, tar: tarfile.TarFile, manifest: dict[str, Any], staging: Path, dumps: Path
) -> None:
    expected = {c["path"]: c for c in manifest["contents"]}
    seen: set[str] = set()
    while (member := tar.next()) is not None:  # the members after the manifest, read once
        entry = expected.get(member.name)
        if entry is None or member.name in seen or not member.isfile():
            raise _corrupt(archive, f"unexpected member {member.name!r}")
        seen.add(member.name)
        rel = _safe_path(archive, member.name)
        if rel.parts[0] == "database":
            path = dumps / rel.name
        else:
            path = staging.joinpath(*rel.parts[1:])
            path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None
        digest = hashlib.sha256()
        size = 0
        with path.open("xb") as out:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
            raise _corrupt(archive, f"{member.name} does not match its size and sha256")
    missing = sorted(set(expected) - seen)
    if missing:
        raise _corrupt(archive, f"{len(missing)} member(s) missing, the first {missing[0]!r}")


def _safe_path(archive: Path, name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if (
        path.is_absolute()
        or ".." in path.parts
        or len(path.parts) < 2
        or path.parts[0] not in ("database", "data")
        or (path.parts[0] == "database" and len(path.parts) != 2)
    ):
        raise _corrupt(archive, f"a member's path is not allowed: {name!r}")
    return path


def _corrupt(archive: Path, reason: str) -> CorruptBackup:
    return CorruptBackup(
        f"the backup {archive} is damaged or not a Fogline backup", [Problem("archive", reason)]
    )


# --- shared ------------------------------------------------------------------------------


@contextlib.contextmanager
def _stopped_platform(data_dir: Path, doing: str) -> Iterator[None]:
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except PlatformAlreadyRunning as exc:
        pid = exc.holder.get("pid", "unknown")
        url = exc.holder.get("url") or "not listening yet"
        raise BackupRefused(
            f"a Fogline platform is running on the data dir {data_dir} (pid {pid}, API {url}): "
            f"stop it to {doing} (Ctrl-C where it runs, or kill {pid}); its JetStream files "
            "are a consistent copy only while it is stopped"
        ) from None
    try:
        yield
    finally:
        lock.release()


def _private_tempdir(parent: Path, prefix: str) -> str:
    import tempfile

    return tempfile.mkdtemp(prefix=prefix, dir=parent)  # made 0700


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.mtime = int(time.time())
    return info


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    with path.open("rb") as source:
        tar.addfile(_member(name, os.fstat(source.fileno()).st_size), source)


def _file_digest(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise BackupRefused(
            f"cannot read {path} to back it up: {exc.strerror or exc}; run the backup as the "
            "user the platform runs as"
        ) from None
    return size, digest.hexdigest()


class _Hashing:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.raw.write(data)

    def hex(self) -> str:
        return self.digest.hexdigest()
