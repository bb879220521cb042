"""SIGKILL `sluice run` mid-flight, run it again: every row lands once, the landed cost equals an uninterrupted
run's, and the review stage makes the same decisions (the CI-sized version of bench/crash_resume.py).

The run is the crash harness's review scenario: every answer under a JSON Schema, some rows answered invalidly by
the provider (retried once, escalated, or failing everywhere), a shadow sample of the small tier on premium."""

from pathlib import Path

import pyarrow.parquet as pq

from tests.support.crash import (
    ReplayingServer,
    all_api_catalogue,
    crash_and_resume,
    reference_run,
    review_args,
    review_faults,
)

SAMPLE = Path("data/samples/prompts.parquet")


def test_killed_runs_resume_without_losing_or_double_charging_rows(tmp_path):
    rows = pq.read_metadata(SAMPLE).num_rows
    args = review_args(tmp_path)
    with ReplayingServer(faults=review_faults(0.05)) as server:
        cat = all_api_catalogue(tmp_path / "cat.toml", server.base_url)
        _, ref = reference_run(SAMPLE, tmp_path / "ref", cat, server, args=args)
        assert ref.rows_landed == ref.distinct_rows == rows and ref.provider_resent == 0
        # the scenario reaches every kind of review decision
        assert {"first", "retry", "escalation", "shadow"} <= set(ref.attempts_by_kind), ref
        kills = [
            # inside the infer stage, mid-tier
            ("shard 2", 0.1, lambda s: s.startswith("infer")),
            # the small tier's retries decided and being answered: inside the review stage
            ("retry small", 0.0, lambda s: s.startswith("review")),
            # the escalation to premium decided: premium's routed, escalated and shadow rows still to answer
            ("escalated to premium", 0.0, lambda s: s.startswith("review")),
        ]
        for i, (milestone, delay, where) in enumerate(kills):
            o = crash_and_resume(SAMPLE, tmp_path / f"k{i}", cat, server, milestone=milestone, delay_s=delay,
                                 args=args)
            assert o.killed and where(o.stage_at_kill), o
            assert (o.rows_landed, o.distinct_rows) == (rows, rows) and o.runs_landed == 1, o
            assert abs(o.cost_usd - ref.cost_usd) < 1e-9, o
            assert (o.attempts_by_kind, o.decisions) == (ref.attempts_by_kind, ref.decisions), o  # same decisions
            assert o.provider_resent <= 16  # at most the shard that was in flight
