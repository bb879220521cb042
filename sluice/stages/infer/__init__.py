"""Infer: each tier answers its partition on its backend, shard by shard, and every row is priced.

    answer.py        requests from rows, answers and per-row costs, checkpointed shards
    interrupted.py   requests a kill cut off (an API shard's sent log), landed as attempts before they are re-sent
    tier_validation.py  a tier naming a `reference_tier` (a quantised model) compared with it on a sample of its
                        rows before it is used; refused, its rows go to the next tier
"""

from sluice.stages.infer.answer import (
    answer_shard,
    claim_shard,
    clear_claims,
    infer_tier_shards,
    requests_from,
    shard_answered,
    shard_count,
    sum_billings,
    tier_billing,
)

__all__ = ["answer_shard", "claim_shard", "clear_claims", "infer_tier_shards", "requests_from", "shard_answered",
           "shard_count", "sum_billings", "tier_billing"]
