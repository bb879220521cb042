"""Route: score every prompt and assign a tier for the whole batch.

    assign.py      the stage: route_batch, and the per-tier partitions infer reads
    scorers.py     the Scorer interface; gatekeeper.py (heuristic) and the trained routers implement it:
                   learned.py (logistic heads, and `load_router` for every kind), knn.py (neighbours over MiniLM),
                   per_tier.py (one quality predictor per tier), choose.py (`--kind auto`: by cross-validation)
    training.py    labels, folds and APGR the router kinds share; heads.py the logistic head
    versions.py    router versions in the warehouse: judged on held-out folds, retrained after a run, promoted
    loop.py        what a run routes with (given, promoted or heuristic) and the quality floor's next-run rule
    features.py    the learned router's features
    policies.py    scores -> tiers: thresholds, a share calibrated on the batch, a dollar budget
    brevity.py     prompt trimming (with `trim` on, of every pending row before it is scored) and answer caps by
                   intent
"""

from __future__ import annotations

import tempfile
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config import Settings
from sluice.stages.context import StageContext
from sluice.stages.route.assign import OVER_BUDGET, route_batch, write_tier_partitions
from sluice.stages.route.brevity import trim_pending
from sluice.stages.route.partitioned import route_partitioned

__all__ = ["OVER_BUDGET", "describe", "route_batch", "run", "write_tier_partitions"]


def run(table: pa.Table, settings: Settings, ctx: StageContext) -> pa.Table:
    if ctx.catalogue.trim:  # prompts trimmed before they are scored and priced (brevity.trim_pending)
        df = pl.from_arrow(table)
        assert isinstance(df, pl.DataFrame)
        table = trim_pending(df).to_arrow()
    if ctx.cluster is not None:
        return _route_on(table, settings, ctx)
    return route_batch(table, ctx.catalogue.names, settings.router, ctx.catalogue, settings.default_max_tokens)


def _route_on(table: pa.Table, settings: Settings, ctx: StageContext) -> pa.Table:
    """`route_batch` as partitioned map/reduce on `ctx.cluster` (`sluice.stages.route.partitioned`, as `sluice
    route --cluster` runs it): the rows are written to a folder under `ctx.shared_dir` for the workers to read, its
    partitions routed there, the routed file read back. Same rows and tiers as `route_batch` (over 64k rows a
    learned router's scores can differ in the last bit: it scores in 64k batches, `route_partitioned` says why)."""
    assert ctx.cluster is not None
    with tempfile.TemporaryDirectory(prefix="route-", dir=ctx.shared_dir) as folder:
        src, dst = Path(folder) / "rows.parquet", Path(folder) / "routed.parquet"
        pq.write_table(table, src)
        ctx.cluster("route", partial(route_partitioned, src, dst, ctx.catalogue.names, settings.router, ctx.catalogue,
                                     settings.default_max_tokens, None, partition_rows=settings.cluster.partition_rows))
        return pq.read_table(dst)


def describe(routed: pa.Table) -> list[str]:
    pending = [t for s, t in zip(routed["status"].to_pylist(), routed["tier"].to_pylist()) if s == "pending" and t]
    counts = {t: pending.count(t) for t in dict.fromkeys(pending)}
    lines = ["route: " + (", ".join(f"{t}={n}" for t, n in counts.items()) or "nothing to send")]
    if "trim_tokens_saved" in routed.column_names:
        saved = [n for n in routed["trim_tokens_saved"].to_pylist() if n]
        lines.append(f"route: prompts trimmed, {len(saved)} rows shorter by {sum(saved)} input tokens")
    over = [e for s, e in zip(routed["status"].to_pylist(), routed["error"].to_pylist()) if s == OVER_BUDGET]
    if over:
        lines.append(f"route: {len(over)} rows over budget, deferred to the next run: {over[0]}")
    return lines
