"""Infer: each tier answers its partition on its backend, shard by shard, and every row is priced.

    answer.py        requests from rows, answers and per-row costs, checkpointed shards
    quantisation.py  a quantised self-hosted tier compared with its full-precision model before it is used
"""

from sluice.stages.infer.answer import answer_shard, infer_tier_shards, requests_from, shard_count, tier_billing

__all__ = ["answer_shard", "infer_tier_shards", "requests_from", "shard_count", "tier_billing"]
