"""infer-shard: answer one shard of one tier's partition, on whichever worker picks it up.

The scale-out path. `sluice-run` with `dispatch="infer-shard/gpu"` submits one flow run of this deployment per
shard of each self-hosted tier; every worker of the `gpu` work pool takes shards as it frees up, so N workers on
N machines share a batch. Shards read the tier partition from the run folder and write their answers and billing
beside it (the run folder must be shared: a network filesystem, or the same machine); a shard already answered is
skipped, so a retried or duplicated flow run never pays twice. A worker whose engine is warm goes on to the tier's
shards no run has started (an exclusive claim file per shard; the run dispatched for a shard so taken skips it),
so N workers start N engines per tier, not one per shard. Each worker bills its own engine start: the tier's cost
is the sum of every worker's billed time, apportioned to the rows each answered. Every pass of a tier is
dispatched alike: its routed rows and the review's follow-ups (escalations, shadow answers, schema retries).

    prefect deploy --no-prompt --name infer-shard         # from prefect.yaml
    prefect worker start --pool gpu                        # on each GPU machine
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from sluice.config import load_settings
from sluice.contracts.columns import DEFAULT_MAX_TOKENS
from tasks.infer import infer_one_shard


@flow(name="infer-shard")
def infer_shard(
    run_dir: str,
    tier_name: str,
    partition: str,
    shard: int,
    shard_rows: int,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    catalogue: str | None = None,
    data_dir: str | None = None,
    kind: str = "first",
) -> dict[str, float]:
    """`kind`: the pass ("first", or a follow-up: "escalation", "shadow", "retry"; answers under answers/<kind>/)."""
    settings = load_settings(catalogue_path=catalogue, data_dir=data_dir)
    return infer_one_shard(Path(run_dir), tier_name, Path(partition), shard, shard_rows, settings.catalogue(),
                           str(settings.data_dir), default_max_tokens, kind=kind)
