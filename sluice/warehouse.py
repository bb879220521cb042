"""The DuckDB warehouse: one file, one writer at a time, analysts read it with plain SQL.

DuckDB locks a database file for a single writing process (a second process fails at once with "Could not set
lock on file", even read-only). Sluice therefore writes in short transactions and retries on the lock with
backoff, and everything slow (inference) happens before the connection is opened.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb
from tenacity import retry, retry_if_exception, stop_after_delay, wait_random_exponential

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

DDL = [
    """
    CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TIMESTAMP DEFAULT now())
    """,
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,
        dataset VARCHAR NOT NULL,
        source VARCHAR,
        started_at TIMESTAMPTZ,
        finished_at TIMESTAMPTZ,
        rows BIGINT,
        duplicates BIGINT,
        quarantined BIGINT,
        failed BIGINT,
        cost_usd DOUBLE,
        baseline_cost_usd DOUBLE,
        billing JSON
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS results (
        run_id VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        row_id VARCHAR NOT NULL,
        prompt VARCHAR,
        response VARCHAR,
        tier VARCHAR,
        model VARCHAR,
        status VARCHAR NOT NULL,
        dup_of VARCHAR,
        input_tokens BIGINT,
        output_tokens BIGINT,
        latency_ms DOUBLE,
        cost_usd DOUBLE,
        baseline_cost_usd DOUBLE,
        system VARCHAR,
        max_tokens INTEGER,
        dup_kind VARCHAR,
        dup_score DOUBLE,
        route_score DOUBLE,
        route_reason VARCHAR,
        error VARCHAR,
        finish_reason VARCHAR,
        row_index BIGINT,
        PRIMARY KEY (run_id, row_id)
    )
    """,
]

RESULT_COLUMNS = [
    "run_id", "dataset", "row_id", "prompt", "response", "tier", "model", "status", "dup_of", "input_tokens",
    "output_tokens", "latency_ms", "cost_usd", "baseline_cost_usd", "system", "max_tokens", "dup_kind",
    "dup_score", "route_score", "route_reason", "error", "finish_reason", "row_index",
]


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.IOException) and "lock" in str(exc).lower()


@retry(
    retry=retry_if_exception(_is_lock_error),
    wait=wait_random_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(300),
    reraise=True,
)
def _open(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(path, read_only=read_only)


@contextmanager
def connect(path: str | Path, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the warehouse (creating its schema when writing), waiting politely for another writer's lock."""
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    con = _open(str(path), read_only)
    try:
        if not read_only:
            migrate(con)
        yield con
    finally:
        con.close()


def migrate(con: duckdb.DuckDBPyConnection) -> None:
    for stmt in DDL:
        con.execute(stmt)
    if con.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [SCHEMA_VERSION])
