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

`score_batches` and `attach_batches` are the two passes over any run of batches: `sluice.stages.route.partitioned`
runs them per partition on a cluster, with the tiers assigned once in between.

Peak memory is a batch's worth of rows and its features, plus those few numbers a row (about 16-32 MB at 1M
rows), plus the budget plan's own working set in budget mode. A row group is read whole, so it bounds a batch
from below: files written with very large row groups cost a row group's worth of memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config import RouterSettings
from sluice.contracts.columns import DEFAULT_MAX_TOKENS
from sluice.stages.route.assign import (
    TierPlan,
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


@dataclass
class Scored:
    """Pass 1's keep for a run of batches: each batch's scores, the spill's row group holding its reasons (None:
    nothing pending), and in budget mode each batch's planned costs and deferred-by-an-earlier-run flags."""

    scores: list[np.ndarray] = field(default_factory=list)
    spilled: list[int | None] = field(default_factory=list)
    costs: list[np.ndarray] = field(default_factory=list)
    carried: list[np.ndarray] = field(default_factory=list)

    def plan(self, n_tiers: int, settings: RouterSettings) -> TierPlan:
        """Tiers for every scored row at once (`assign_tiers`)."""
        budget = settings.budget_usd is not None
        return assign_tiers(np.concatenate(self.scores) if self.scores else np.zeros(0), n_tiers, settings,
                            np.concatenate(self.costs) if budget and self.costs else np.zeros((0, n_tiers)),
                            np.concatenate(self.carried) if self.carried else None)


def score_batches(batches: Iterable[pl.DataFrame], spill_path: Path, tiers: list[str], settings: RouterSettings,
                  catalogue: "Catalogue | None", default_max_tokens: int, scorer: Scorer) -> Scored:
    """Pass 1: score each batch's pending rows; keep scores (and costs), spill the reasons to `spill_path`."""
    kept = Scored()
    with pq.ParquetWriter(spill_path, pa.schema([("why", pa.string())])) as spill:
        for df in batches:
            _, sub, s, why = score_pending(df, scorer)
            kept.scores.append(np.asarray(s, dtype=np.float64))
            kept.spilled.append(None if not why else sum(g is not None for g in kept.spilled))
            if why:
                spill.write_table(pa.table({"why": pa.array(why, pa.string())}), row_group_size=len(why))
            if settings.budget_usd is not None:
                c, k = budget_inputs(sub, tiers, settings, catalogue, default_max_tokens)
                kept.costs.append(c)
                if k is not None:
                    kept.carried.append(k)
    return kept


def attach_batches(batches: Iterable[pl.DataFrame], kept: Scored, plan: TierPlan, spill_path: Path, out: _Output,
                   scorer: Scorer, tiers: list[str], settings: RouterSettings) -> None:
    """Pass 2: the same batches again, each with its slice of `plan` (its rows first) and its spilled reasons."""
    reasons = pq.ParquetFile(spill_path)
    lo = 0
    for df, s, group in zip(batches, kept.scores, kept.spilled):
        why = [] if group is None else reasons.read_row_group(group)["why"].to_pylist()
        out.write(finish_routed(df, pending_rows(df), s, why, plan, scorer, tiers, settings, lo))
        lo += len(s)


def _two_passes(src: Path, out: _Output, tiers: list[str], settings: RouterSettings, catalogue: "Catalogue | None",
                default_max_tokens: int, scorer: Scorer, batch_rows: int) -> None:
    spill_path = out.path.with_name(out.path.name + ".reasons.partial")
    try:
        kept = score_batches(_batches(src, batch_rows), spill_path, tiers, settings, catalogue, default_max_tokens,
                             scorer)
        attach_batches(_batches(src, batch_rows), kept, kept.plan(len(tiers), settings), spill_path, out, scorer,
                       tiers, settings)
    finally:
        spill_path.unlink(missing_ok=True)
