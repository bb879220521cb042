"""Sluice's settings: every path and threshold in one typed place, loaded once per run.

Precedence: explicit arguments (CLI flags, flow parameters) > environment (`SLUICE_*`) > defaults.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from models.catalogue import Catalogue, load_catalogue
from sluice.contracts.columns import DEFAULT_MAX_TOKENS, MAX_PROMPT_CHARS


class RouterSettings(BaseModel):
    """How rows are assigned to tiers (`sluice.stages.route.assign.route_batch`).

    The score is the heuristic gatekeeper's complexity in [0, 1], or, with `model` (a folder saved by
    `sluice router train`), the learned router's probability that the premium tier is needed. It picks the tier:
        default           score < small_below -> the cheapest tier; score >= premium_from -> the last (premium)
                          tier; between -> the middle tier(s), split evenly by score
        premium_share     the top `premium_share` of this batch's scores -> premium (RouteLLM's calibration: the
                          threshold is a quantile of the batch itself), the next `mid_share` -> the middle tier(s)
        budget_usd        a hard cap on the whole run's spend: routing fills it with the upgrades that buy the most
                          expected quality per dollar (`sluice.stages.route.policies`), then every pass reserves its
                          cost within it (`sluice.stages.budget`); rows it cannot afford land as `deferred`
    """

    model_config = ConfigDict(extra="forbid")
    small_below: float = Field(default=0.30, ge=0, le=1)
    premium_from: float = Field(default=0.60, ge=0, le=1)
    model: Path | None = None
    premium_share: float | None = Field(default=None, ge=0, le=1)
    mid_share: float = Field(default=0.20, ge=0, le=1)
    budget_usd: float | None = Field(default=None, ge=0)
    # share of a cheap tier's failures a middle tier is assumed to recover (budget mode; see sluice/stages/route/policies.py)
    mid_recovery: float = Field(default=0.5, ge=0, le=1)
    # tokens (in + out) per second a self-hosted worker sustains, for tiers whose catalogue entry gives none:
    # prices self-hosted rows per token in budget mode (worker $/hour / 3600 / this)
    self_hosted_tokens_per_s: float = Field(default=500.0, gt=0)
    # Batch cascade (sluice/stages/review/decide.py): after a tier has answered, its least confident answers (and answers that
    # fail their schema twice) are escalated to the next tier: at most `cascade_share` of the tier's answered
    # rows, only rows with confidence exp(mean token logprob) below `cascade_min_confidence` (tiers with
    # `logprobs = true`), and at most `cascade_budget_usd` of planned extra spend over the run (None: no dollar cap)
    cascade_share: float = Field(default=0.10, ge=0, le=1)
    cascade_min_confidence: float = Field(default=0.5, ge=0, le=1)
    cascade_budget_usd: float | None = Field(default=None, ge=0)
    # answer checks as the confidence of tiers without logprobs (sluice/stages/review/verifier.py): a
    # verifier.json, or a folder holding one; None: the one beside `model`, if any
    verifier: Path | None = None
    # Shadow sampling: this share of the cheapest tier's answered rows is also answered by the last (premium) tier;
    # agreement lands in `router_training` for `sluice router train --from-warehouse`
    shadow_share: float = Field(default=0.05, ge=0, le=1)
    # The router that learns every night (sluice/stages/route/versions.py): a run without `model` routes with the
    # warehouse's promoted router version (`use_promoted`); after a run lands, a new version is trained once this
    # many labels (shadow verdicts, graded rows) have arrived since the last version was trained, and promoted only
    # if it beats the promoted one on held-out folds. A first version uses MiniLM embeddings when
    # `retrain_embeddings`; later ones keep the promoted version's features, so that the two compare like for like
    use_promoted: bool = True
    retrain_min_new_labels: int = Field(default=50, ge=1)
    retrain_embeddings: bool = True
    # The quality floor's loop (sluice/stages/route/loop.py): after a run of a dataset fell under its --min-quality,
    # the next run of that dataset sends this much more of its rows to premium (capped at 1.0); 0 turns it off
    quality_step: float = Field(default=0.1, ge=0, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "RouterSettings":
        if self.small_below > self.premium_from:
            raise ValueError("router.small_below must not exceed router.premium_from")
        if self.premium_share is not None and self.budget_usd is not None:
            raise ValueError("router: give premium_share or budget_usd, not both")
        return self


class ClusterSettings(BaseModel):
    """Where the map/reduce stages (`sluice route`, `sluice dedup`'s near stage, and both in `sluice run`) run
    their partitions (flows/cluster.py, docs/cluster.md): `local` in this process (the default), or `dask`: each
    partition a Prefect task on a Dask cluster, the one whose scheduler listens at `address` (`tcp://host:8786`),
    or without one a temporary local cluster of `workers` processes of `threads_per_worker` threads. A route
    partition is >= `partition_rows` rows (whole batches); the near stage's come from its own
    NearConfig.partition_rows."""

    model_config = ConfigDict(extra="forbid")
    engine: Literal["local", "dask"] = "local"
    address: str | None = None
    workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    partition_rows: int = Field(default=262_144, gt=0)

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "ClusterSettings":
        if self.address and self.engine != "dask":
            raise ValueError("cluster.address is set but cluster.engine is 'local': set engine to 'dask'")
        return self


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Path("data")
    warehouse: Path | None = None  # default: <data_dir>/warehouse.duckdb
    runs_dir: Path | None = None  # default: <data_dir>/runs (stage hand-off files, one folder per run)
    catalogue_path: Path | None = None  # default: the packaged models/catalogue.toml
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, gt=0)
    # rows per infer shard: each shard's answers are checkpointed when it finishes (resume redoes at most one)
    shard_rows: int = Field(default=256, gt=0)
    # characters of prompt + system per row; a longer row is quarantined at ingest (sluice.contracts.columns.MAX_PROMPT_CHARS)
    max_prompt_chars: int = Field(default=MAX_PROMPT_CHARS, gt=0)
    # the dedup stage's semantic rule is the most permissive whose upper 95% bound on the false-hit rate is at most
    # this, on labelled pairs plus the team's own verdicts (sluice/stages/dedup/calibrate.py)
    max_false_hit: float = Field(default=0.01, gt=0, lt=1)
    router: RouterSettings = Field(default_factory=RouterSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    # the drop box the scheduled runs serve (`s3://bucket/prefix` or a folder; None: <data_dir>/drop)
    drop_url: str | None = None
    # the checkout deployments run from (the pull step `sluice.dropbox.workspace.enter_checkout`; None: the
    # checkout holding the installed package)
    home: Path | None = None

    @model_validator(mode="after")
    def _derived_paths(self) -> "Settings":
        if self.warehouse is None:
            self.warehouse = self.data_dir / "warehouse.duckdb"
        if self.runs_dir is None:
            self.runs_dir = self.data_dir / "runs"
        return self

    def catalogue(self) -> Catalogue:
        return load_catalogue(self.catalogue_path)


_ENV = {
    "data_dir": "SLUICE_DATA_DIR",
    "warehouse": "SLUICE_WAREHOUSE",
    "runs_dir": "SLUICE_RUNS_DIR",
    "catalogue_path": "SLUICE_CATALOGUE",
    "shard_rows": "SLUICE_SHARD_ROWS",
    "max_prompt_chars": "SLUICE_MAX_PROMPT_CHARS",
    "max_false_hit": "SLUICE_MAX_FALSE_HIT",
    "drop_url": "SLUICE_DROP_URL",
    "home": "SLUICE_HOME",
}


_CLUSTER_ENV = {
    "engine": "SLUICE_CLUSTER",
    "address": "SLUICE_CLUSTER_ADDRESS",
    "workers": "SLUICE_CLUSTER_WORKERS",
    "partition_rows": "SLUICE_CLUSTER_PARTITION_ROWS",
}


def load_settings(**overrides: object) -> Settings:
    """Defaults, then SLUICE_* environment variables, then explicit non-None overrides."""
    values: dict[str, object] = {k: os.environ[v] for k, v in _ENV.items() if os.environ.get(v)}
    cluster = {k: os.environ[v] for k, v in _CLUSTER_ENV.items() if os.environ.get(v)}
    if cluster:
        values["cluster"] = cluster
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings.model_validate(values)


# Read by the libraries Sluice drives when they are imported or started, so the `sluice` command sets them (unless
# the user did) before it imports any: no telemetry host to reach (there is none offline), a patient temporary
# Prefect server, no model hub, and the CPU KV cache vLLM needs (it reads the NUMA node's memory otherwise).
RUNTIME_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
    "HF_HUB_OFFLINE": "1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}


def apply_runtime_env() -> None:
    for name, value in RUNTIME_ENV.items():
        os.environ.setdefault(name, value)
    return_large_frees()


MMAP_THRESHOLD = 1 << 20


def return_large_frees(threshold: int = MMAP_THRESHOLD) -> bool:
    """Allocations of `threshold` bytes or more get their own memory map, returned to the system when freed (glibc's
    mallopt M_MMAP_THRESHOLD; elsewhere nothing happens, False). glibc raises its threshold to the largest block
    freed so far (up to 32 MB), after which MiniLM's activations, Arrow buffers and numpy blocks of tens of MB come
    from the heap and stay in the process after they are freed: peak RSS of one MiniLM pass over 15k prompts
    measured 1675 -> 1088 MB (issue 19, bench/results/scale.md). Set once per process, before the big work."""
    from sluice.allocators import glibc

    mallopt = getattr(glibc(), "mallopt", None)
    if mallopt is None:
        return False
    m_mmap_threshold = -3
    return bool(mallopt(m_mmap_threshold, int(threshold)))
