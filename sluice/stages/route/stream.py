"""Route a Parquet file of any size in bounded memory: read it in record batches, write the output as it goes.

The output is the one `route_batch` gives on the whole file read into memory (same rows, tiers, scores and
reasons); only memory differs. Thresholds (the heuristic gatekeeper's or a router's) decide each row on its own,
so each batch is routed and written in one pass. A premium share or a dollar budget decides over all the rows'
scores at once, so it takes two passes:

    1. score each batch's pending rows; keep the scores (8 bytes a row), in budget mode each row's planned cost
       per tier (8 bytes x tiers) and whether an earlier run deferred it, and spill the scorer's reasons to a
       Parquet file beside the output (one row group per batch);
    2. assign every tier at once (`assign_tiers`: the share's quantile, or the budget plan), then read the input
       again batch by batch, attach each batch's slice of the tiers and its spilled reasons, and write it.

Peak memory is a batch's worth of rows and its features, plus those few numbers a row (about 16-32 MB at 1M
rows), plus the budget plan's own working set in budget mode. A row group is read whole, so it bounds a batch
from below: files written with very large row groups cost a row group's worth of memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config import RouterSettings
from sluice.contracts.columns import DEFAULT_MAX_TOKENS
from sluice.stages.route.assign import (
    assign_tiers,
    budget_inputs,
    finish_routed,
    heuristic_route,
    learned_route,
    pending_rows,
    score_pending,
)
from sluice.stages.route.scorers import Scorer, scorer_for

if TYPE_CHECKING:
    from models.catalogue import Catalogue
    from sluice.stages.route.learned import LearnedRouter

BATCH_ROWS = 65_536


def _batches(src: Path, batch_rows: int) -> Iterator[pl.DataFrame]:
    for batch in pq.ParquetFile(src).iter_batches(batch_size=batch_rows):
        df = pl.from_arrow(pa.Table.from_batches([batch]))
        assert isinstance(df, pl.DataFrame)
        yield df


class _Output:
    """The output file, written batch by batch under a temporary name and moved into place when complete (a
    reader never sees half of it); counts rows per tier and keeps the first unrouted row's reason."""

    def __init__(self, path: Path):
        self.path, self.tmp = path, path.with_name(path.name + ".partial")
        self.writer: pq.ParquetWriter | None = None
        self.counts: dict[str | None, int] = {}
        self.unrouted_reason: str | None = None

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        else:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)
        routed = pl.from_arrow(table.select(["tier", "route_reason"]))
        assert isinstance(routed, pl.DataFrame)
        for tier, n in routed.group_by("tier").len().iter_rows():
            self.counts[tier] = self.counts.get(tier, 0) + n
        unrouted = routed.filter(pl.col("tier").is_null())
        if self.unrouted_reason is None and unrouted.height:
            self.unrouted_reason = unrouted["route_reason"][0]

    def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        os.replace(self.tmp, self.path)


def route_file(
    src: Path,
    dst: Path,
    tiers: list[str],
    settings: RouterSettings,
    catalogue: "Catalogue | None" = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    router: "Scorer | LearnedRouter | None" = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[dict[str | None, int], str | None]:
    """Route the Parquet file `src` into `dst` as `route_batch` would the whole table; returns rows per tier
    (None: unrouted) and the first unrouted row's reason."""
    if len(tiers) < 2:
        raise ValueError("routing needs at least two tiers")
    if router is None and settings.model is not None:
        from sluice.stages.route.learned import load_router

        router = load_router(settings.model)
    out = _Output(dst)
    try:
        if settings.premium_share is None and settings.budget_usd is None:
            for df in _batches(src, batch_rows):  # every row on its own: one pass
                out.write(heuristic_route(df.to_arrow(), tiers, settings) if router is None else
                          learned_route(df.to_arrow(), tiers, settings, router, catalogue, default_max_tokens))
        else:
            _two_passes(src, out, tiers, settings, catalogue, default_max_tokens, scorer_for(router), batch_rows)
    except BaseException:
        if out.writer is not None:
            out.writer.close()
        out.tmp.unlink(missing_ok=True)
        raise
    out.close()
    return out.counts, out.unrouted_reason


def _two_passes(src: Path, out: _Output, tiers: list[str], settings: RouterSettings, catalogue: "Catalogue | None",
                default_max_tokens: int, scorer: Scorer, batch_rows: int) -> None:
    budget = settings.budget_usd is not None
    spill_path = out.path.with_name(out.path.name + ".reasons.partial")
    scores: list[np.ndarray] = []
    spilled: list[int | None] = []  # the spill's row group holding each batch's reasons (None: nothing pending)
    costs: list[np.ndarray] = []
    carried: list[np.ndarray] = []
    try:
        with pq.ParquetWriter(spill_path, pa.schema([("why", pa.string())])) as spill:
            for df in _batches(src, batch_rows):  # pass 1: scores and costs kept, reasons spilled
                _, sub, s, why = score_pending(df, scorer)
                scores.append(np.asarray(s, dtype=np.float64))
                spilled.append(None if not why else sum(g is not None for g in spilled))
                if why:
                    spill.write_table(pa.table({"why": pa.array(why, pa.string())}), row_group_size=len(why))
                if budget:
                    c, k = budget_inputs(sub, tiers, settings, catalogue, default_max_tokens)
                    costs.append(c)
                    if k is not None:
                        carried.append(k)
        all_scores = np.concatenate(scores) if scores else np.zeros(0)
        plan = assign_tiers(all_scores, len(tiers), settings,
                            np.concatenate(costs) if budget and costs else np.zeros((0, len(tiers))),
                            np.concatenate(carried) if carried else None)
        reasons = pq.ParquetFile(spill_path)
        lo = 0
        for df, s, group in zip(_batches(src, batch_rows), scores, spilled):  # pass 2: tiers attached, written
            why = [] if group is None else reasons.read_row_group(group)["why"].to_pylist()
            out.write(finish_routed(df, pending_rows(df), s, why, plan, scorer, tiers, settings, lo))
            lo += len(s)
    finally:
        spill_path.unlink(missing_ok=True)
