"""The DuckDB warehouse: one file, one writer at a time, analysts read it with plain SQL.

DuckDB locks a database file for a single writing process (a second process fails at once with "Could not set
lock on file", even read-only). Sluice therefore writes in short transactions and retries on the lock with
backoff, and everything slow (inference, assembling and staging the rows) happens before the connection is
opened. Analysts read with `connect(path, read_only=True)` (or `duckdb -readonly`) while nothing writes, and
close the connection when done: an open reader holds the lock too, and a landing waits for it (up to
`LOCK_TIMEOUT_S`). For long sessions, copy the file first (`cp` is safe while nothing writes). docs/analysts.md
has the schema, the views and example queries.

Schema changes are ordered migrations (`MIGRATIONS`, in `sluice/warehouse/migrations.py`), each applied once in its own transaction and recorded in
`schema_version`, so an existing file upgrades in place the next time a writer opens it. The analyst views
(`sluice/warehouse/views.py`) are derived, not data: every writer recreates them after migrating, so they always match the
columns `results` has.
"""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

# Re-exported: writers and tests import the schema's names from here.
from sluice.warehouse.migrations import ATTEMPT_COLUMNS, MIGRATIONS, RESULT_COLUMNS, SCHEMA_VERSION  # noqa: F401

log = logging.getLogger(__name__)

# How long a writer waits for another process's lock on the file before giving up.
LOCK_TIMEOUT_S = 300


def is_lock_error(exc: BaseException) -> bool:
    """DuckDB's answer when another process holds the file: 'Could not set lock on file ...'."""
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


@retry(
    retry=retry_if_exception(is_lock_error),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(LOCK_TIMEOUT_S),
    reraise=True,
)
def _open(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(path, read_only=read_only)


# Within one process DuckDB shares one database per file among connections, and two threads writing at once meet
# in DuckDB's optimistic transactions ("write-write conflict"): writers of the same file take turns on this lock.
_WRITERS: dict[str, threading.RLock] = {}
_WRITERS_GUARD = threading.Lock()


def _writer_lock(path: Path) -> threading.RLock:
    key = str(path.resolve())
    with _WRITERS_GUARD:
        return _WRITERS.setdefault(key, threading.RLock())


@contextmanager
def connect(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse (migrating it when writing), waiting politely for another writer.

    Writers in other processes: DuckDB's file lock, retried with backoff for up to LOCK_TIMEOUT_S. Writers in
    other threads of this process: a lock per file.
    """
    path = Path(path)
    if read_only:
        con = _open(str(path), True)
        try:
            yield con
        finally:
            con.close()
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with _writer_lock(path):
        con = _open(str(path), False)
        try:
            migrate(con)
            yield con
        finally:
            con.close()


def schema_version(con: duckdb.DuckDBPyConnection) -> int:
    """The highest migration applied to this file (0 for an empty file)."""
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchone()[0]
    if not exists:
        return 0
    return con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply every migration newer than the file's version, each in one transaction; refresh the views.

    A v1 file (written before migrations existed) has `schema_version` = 1 and its tables, so it gets 2 and
    later. Returns the version the file is at afterwards.
    """
    from sluice.warehouse.views import create_views

    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP DEFAULT now())"
    )
    current = schema_version(con)
    if current > SCHEMA_VERSION:
        raise RuntimeError(
            f"warehouse schema is at version {current}, newer than this Sluice ({SCHEMA_VERSION}): upgrade Sluice"
        )
    for version, what, statements in MIGRATIONS:
        if version <= current:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for stmt in statements:
                con.execute(stmt)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [version])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        log.info("warehouse migrated to version %d (%s)", version, what)
        current = version
    create_views(con)
    return current
