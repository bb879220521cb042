"""The hard budget in the warehouse: rows a run deferred for its budget, until a later run answers them, and
each run's ledger (`runs.budget`).

A deferred row (`results.status = 'deferred'`) is outstanding until a later run lands a row pointing back at it
(`results.deferred_from = '<run_id>/<row_id>'`): the next run of the dataset carries every outstanding row
(`sluice.stages.budget.carry`), and lands it under its own run id, deferred again if its budget is spent too.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from sluice.warehouse.db import connect

# the request as landed: what a later run needs to send it again, and what it carries to its results
CARRIED_COLUMNS = ["run_id", "row_id", "row_index", "prompt", "system", "max_tokens", "history", "temperature",
                   "stop", "response_schema", "reference", "grader", "tags", "meta", "deferred_from"]


def outstanding_deferred(warehouse: str | Path, dataset: str) -> pl.DataFrame | None:
    """The dataset's deferred rows no later run has picked up, oldest run first, in their batch order (None when
    the warehouse does not exist yet or there are none)."""
    if not Path(warehouse).is_file():
        return None
    with connect(warehouse) as con:  # migrated: an older file gains deferred_from
        df = con.execute(
            f"""SELECT {', '.join('r.' + c for c in CARRIED_COLUMNS)} FROM results r
                WHERE r.dataset = ? AND r.status = 'deferred' AND NOT EXISTS (
                    SELECT 1 FROM results n WHERE n.deferred_from = r.run_id || '/' || r.row_id)
                ORDER BY r.run_id, r.row_index""", [dataset]).pl()
    return df if df.height else None


def record_run_budget(warehouse: str | Path, run_id: str, budget: dict) -> None:
    """`runs.budget`: the run's ledger summary (budget, spent, reserved, released, rows moved and deferred)."""
    with connect(warehouse) as con:
        con.execute("UPDATE runs SET budget = ? WHERE run_id = ?", [json.dumps(budget), run_id])
