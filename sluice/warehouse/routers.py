"""The `routers` table: every router version trained from the warehouse's labels, and which one is promoted.

A version keeps the whole saved router (its files, so it can be restored anywhere), when it was trained, from how
many labels, its cross-validated score, and why it was or was not promoted. Exactly one version is promoted at a
time; `promote` and `rollback` move that mark and say why. The table is created by the warehouse's migrations.

The nightly loop's bookkeeping lives here too: how many labels arrived since the last version was trained
(`new_labels`: each version records `labels_through`, the newest label it learned from), the promoted version's
files for a run to route with (`promoted_files`), and what each run routed with and why (`record_run_routing`,
`last_run`: `runs.router_version`, `runs.routing`, `runs.quality_loop`).
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
             previous_auroc: float | None, promote: bool, reason: str,
             labels_through: datetime | None = None) -> int:
    """Store a trained router (its saved `folder`) as the next version; promote it when `promote`.
    `labels_through`: the newest `router_training.labelled_at` among the labels it learned from."""
    now = datetime.now(timezone.utc)
    with connect(warehouse) as con:
        con.execute("BEGIN TRANSACTION")
        current = con.execute("SELECT version FROM routers WHERE promoted").fetchone()
        version = int(con.execute("SELECT coalesce(max(version), 0) + 1 FROM routers").fetchone()[0])
        if promote:
            con.execute("UPDATE routers SET promoted = false WHERE promoted")
        values = {"version": version, "trained_at": now, "labels": labels, "target": target, "cv_auroc": cv_auroc,
                  "previous_auroc": previous_auroc, "replaces": current[0] if current else None, "promoted": promote,
                  "promoted_at": now if promote else None, "reason": reason, "files": _pack(folder),
                  "labels_through": labels_through}
        con.execute(f"INSERT INTO routers ({', '.join(values)}) VALUES ({', '.join('?' * len(values))})",
                    list(values.values()))
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


def new_labels(warehouse: str | Path) -> tuple[int, int | None]:
    """(labels that arrived since the last version was trained, that version; None when there is none yet).

    A label arrived after a version when its `labelled_at` is newer than the version's `labels_through` (a label
    written again, when a run is landed again, counts as new). A version registered before `labels_through` was
    kept counts the labels beyond the number it learned from."""
    with connect(warehouse) as con:
        total = int(con.execute("SELECT count(*) FROM router_training").fetchone()[0])
        last = con.execute("SELECT version, labels, labels_through FROM routers ORDER BY version DESC LIMIT 1"
                           ).fetchone()
        if last is None:
            return total, None
        version, used, through = last
        if through is None:
            return max(total - int(used or 0), 0), int(version)
        newer = con.execute("SELECT count(*) FROM router_training WHERE labelled_at > ?", [through]).fetchone()[0]
    return int(newer), int(version)


def promoted_files(warehouse: str | Path) -> tuple[int, str] | None:
    """The promoted version and its saved files (the `files` JSON `restore` writes out), or None."""
    if promoted_version(warehouse) is None:
        return None
    with connect(warehouse, read_only=True) as con:
        row = con.execute("SELECT version, files FROM routers WHERE promoted").fetchone()
    return (int(row[0]), row[1]) if row else None


def unpack_files(files: str, folder: Path) -> Path:
    """Write a version's saved files into `folder` (what `load_router` reads)."""
    return _unpack(files, folder)


def record_run_routing(warehouse: str | Path, run_id: str, router_version: int | None, routing: dict,
                       quality_loop: dict | None) -> None:
    """What run `run_id` routed with (`runs.router_version`, `runs.routing`: the router, the mode, the premium
    share planned and routed, the retraining after it landed) and the quality loop's decision for it."""
    with connect(warehouse) as con:
        con.execute("UPDATE runs SET router_version = ?, routing = ?, quality_loop = ? WHERE run_id = ?",
                    [router_version, json.dumps(routing), json.dumps(quality_loop) if quality_loop else None, run_id])


def last_run(warehouse: str | Path, dataset: str) -> dict | None:
    """The dataset's latest landed run: run_id, min_quality, quality_low, quality_alert, routing, quality_loop."""
    if not Path(warehouse).is_file():
        return None
    with connect(warehouse) as con:  # migrated: an older file gains the routing columns
        row = con.execute(
            "SELECT run_id, min_quality, quality_low, quality_alert, routing, quality_loop FROM runs "
            "WHERE dataset = ? ORDER BY finished_at DESC NULLS LAST, started_at DESC NULLS LAST, run_id DESC LIMIT 1",
            [dataset]).fetchone()
    if row is None:
        return None
    keys = ("run_id", "min_quality", "quality_low", "quality_alert", "routing", "quality_loop")
    run = dict(zip(keys, row, strict=True))
    for k in ("routing", "quality_loop"):
        run[k] = json.loads(run[k]) if run[k] else None
    return run


def training_labels(warehouse: str | Path) -> tuple[pl.DataFrame, datetime | None]:
    """Every stored label (what `sluice.warehouse.labels.read_labels` gives) and the newest `labelled_at` among
    them, read together: a version records the labels it learned from by that time (`labels_through`)."""
    with connect(warehouse) as con:
        labels = con.execute("SELECT run_id, row_id, prompt, cheap_ok, premium_ok, source, labelled_at "
                             "FROM router_training ORDER BY run_id, row_id").pl()
    through = labels["labelled_at"].max() if labels.height else None
    return labels.drop("labelled_at"), through  # type: ignore[return-value]
