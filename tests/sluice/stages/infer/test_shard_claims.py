"""Shard claims of the scale-out path (sluice/stages/infer/answer.py): one process wins each unanswered shard."""

from __future__ import annotations

import multiprocessing as mp

from sluice.stages.infer import claim_shard, clear_claims, shard_answered


def _race(tier_dir, shard, wins):
    wins.put(claim_shard(tier_dir, shard))


def test_one_claimant_per_shard_even_across_processes(tmp_path):
    tier_dir = tmp_path / "answers" / "tier=small"
    wins = mp.get_context("spawn").Queue()
    procs = [mp.get_context("spawn").Process(target=_race, args=(tier_dir, 3, wins)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(wins.get(timeout=5) for _ in procs) == [False, False, False, True]
    assert not claim_shard(tier_dir, 3)  # taken: the run dispatched for it skips it


def test_answered_shards_are_never_claimed_and_clearing_keeps_their_claims(tmp_path):
    tier_dir = tmp_path / "tier=small"
    assert claim_shard(tier_dir, 0) and claim_shard(tier_dir, 1)
    (tier_dir / "shard-00000.billing.json").write_text("{}")
    (tier_dir / "shard-00000.parquet").write_bytes(b"")
    assert shard_answered(tier_dir, 0) and not claim_shard(tier_dir, 0)
    # before a dispatch, claims of unanswered shards (a worker that died holding shard 1) are forgotten
    assert clear_claims(tier_dir) == 1
    assert (tier_dir / "shard-00000.claim").exists() and not (tier_dir / "shard-00001.claim").exists()
    assert claim_shard(tier_dir, 1)
