"""The `routers` table: every router version trained from the warehouse's labels, and which one is promoted.

A version keeps the whole saved router (its files, so it can be restored anywhere), when it was trained, from how
many labels, its cross-validated score, and why it was or was not promoted. Exactly one version is promoted at a
time; `promote` and `rollback` move that mark and say why. The table is created by the warehouse's migrations.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from sluice.warehouse.db import connect

TEXT_FILES = (".json",)


def _pack(folder: Path) -> str:
    files = {}
    for f in sorted(folder.iterdir()):
        if f.is_file():
            files[f.name] = f.read_text() if f.suffix in TEXT_FILES else "base64:" + base64.b64encode(
                f.read_bytes()).decode()
    return json.dumps(files)


def _unpack(files: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in json.loads(files).items():
        if body.startswith("base64:"):
            (folder / name).write_bytes(base64.b64decode(body[len("base64:"):]))
        else:
            (folder / name).write_text(body)
    return folder


def register(warehouse: str | Path, folder: Path, *, labels: int, target: str, cv_auroc: float,
             previous_auroc: float | None, promote: bool, reason: str) -> int:
    """Store a trained router (its saved `folder`) as the next version; promote it when `promote`."""
    now = datetime.now(timezone.utc)
    with connect(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        current = con.execute("SELECT version FROM routers WHERE promoted").fetchone()
        version = int(con.execute("SELECT coalesce(max(version), 0) + 1 FROM routers").fetchone()[0])
        if promote:
            con.execute("UPDATE routers SET promoted = false WHERE promoted")
        con.execute("INSERT INTO routers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [version, now, labels, target, cv_auroc, previous_auroc,
                     current[0] if current else None, promote, now if promote else None, reason, _pack(folder)])
        con.execute("COMMIT")
    return version


def list_routers(warehouse: str | Path) -> pl.DataFrame:
    with connect(warehouse, read_only=True) as con:
        return con.execute(
            "SELECT version, trained_at, labels, target, cv_auroc, previous_auroc, replaces, "
            "promoted, promoted_at, reason FROM routers ORDER BY version").pl()


def promoted_version(warehouse: str | Path) -> int | None:
    if not Path(warehouse).exists():
        return None
    with connect(warehouse, read_only=True) as con:
        if not con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'routers'").fetchone()[0]:
            return None
        row = con.execute("SELECT version FROM routers WHERE promoted").fetchone()
    return int(row[0]) if row else None


def restore(warehouse: str | Path, version: int, folder: Path) -> Path:
    """Write version `version`'s saved router into `folder` (what `load_router` reads)."""
    with connect(warehouse, read_only=True) as con:
        row = con.execute("SELECT files FROM routers WHERE version = ?", [version]).fetchone()
    if row is None:
        raise LookupError(f"no router version {version} in {warehouse}")
    return _unpack(row[0], folder)


def promote(warehouse: str | Path, version: int, reason: str) -> None:
    with connect(warehouse) as con:
        if con.execute("SELECT count(*) FROM routers WHERE version = ?", [version]).fetchone()[0] == 0:
            raise LookupError(f"no router version {version} in {warehouse}")
        con.execute("BEGIN TRANSACTION")
        con.execute("UPDATE routers SET promoted = false WHERE promoted")
        con.execute("UPDATE routers SET promoted = true, promoted_at = ?, reason = ? WHERE version = ?",
                    [datetime.now(timezone.utc), reason, version])
        con.execute("COMMIT")


def rollback(warehouse: str | Path) -> int:
    """Promote the version the promoted one replaced; returns it."""
    with connect(warehouse, read_only=True) as con:
        row = con.execute("SELECT version, replaces FROM routers WHERE promoted").fetchone()
    if row is None or row[1] is None:
        raise LookupError("nothing to roll back to: " + ("no promoted router" if row is None
                                                         else f"version {row[0]} replaced none"))
    promote(warehouse, int(row[1]), f"rollback from version {row[0]}")
    return int(row[1])
