"""SIGKILL `sluice run` mid-flight, run it again: every row lands once, the landed cost equals an uninterrupted
run's plus the requests the kill cut off (each an `interrupted` attempt: the provider billed it), and the review
stage makes the same decisions (the CI-sized version of bench/crash_resume.py).

The run is the crash harness's review scenario: every answer under a JSON Schema, some rows answered invalidly by
the provider (retried once, escalated, or failing everywhere), a shadow sample of the small tier on premium."""

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from tests.support.crash import (
    ReplayingServer,
    all_api_catalogue,
    crash_and_resume,
    reference_run,
    review_args,
    review_faults,
)

SAMPLE = Path("data/samples/prompts.parquet")


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    """The replaying provider, the all-API catalogue, the review options and one uninterrupted reference run,
    shared by the module's kills (the provider answers a request it has seen the same way, so every kill is
    compared with the same reference)."""
    base = tmp_path_factory.mktemp("crash-scenario")
    args = review_args(base)
    with ReplayingServer(faults=review_faults(0.05)) as server:
        cat = all_api_catalogue(base / "cat.toml", server.base_url)
        _, ref = reference_run(SAMPLE, base / "ref", cat, server, args=args)
        yield server, cat, args, ref


def test_killed_runs_resume_without_losing_or_double_charging_rows(tmp_path, scenario):
    rows = pq.read_metadata(SAMPLE).num_rows
    server, cat, args, ref = scenario
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
        # the reference's cost, plus what the requests cut off by the kill cost (billed, then sent again)
        assert abs(o.cost_usd - o.interrupted_cost_usd - ref.cost_usd) < 1e-9, o
        assert (o.attempts_by_kind, o.decisions) == (ref.attempts_by_kind, ref.decisions), o  # same decisions
        assert o.provider_resent <= 16  # at most the shard that was in flight
        assert o.interrupted >= o.provider_resent, o  # every request the provider answered twice is billed
        assert o.interrupted_cost_usd >= o.provider_resent_usd - 1e-12, o  # never under the provider's bill


def test_requests_a_kill_cut_off_land_as_interrupted_attempts_and_their_cost_is_in_the_bill(tmp_path, scenario):
    rows = pq.read_metadata(SAMPLE).num_rows
    server, cat, args, ref = scenario
    # killed once a shard has sent requests (its sent log has a line): at least one is cut off
    o = crash_and_resume(SAMPLE, tmp_path / "k", cat, server, milestone="requests in flight", delay_s=0.1,
                         args=args)
    assert o.killed and (o.rows_landed, o.distinct_rows, o.runs_landed) == (rows, rows, 1), o
    assert o.interrupted >= max(1, o.provider_resent) and o.interrupted_cost_usd > 0, o
    assert o.interrupted_cost_usd >= o.provider_resent_usd - 1e-12, o  # an upper bound on what the provider billed
    assert abs(o.cost_usd - o.interrupted_cost_usd - ref.cost_usd) < 1e-9, o
    assert (o.attempts_by_kind, o.decisions) == (ref.attempts_by_kind, ref.decisions), o
    with duckdb.connect(str(tmp_path / "k" / "wh.duckdb"), read_only=True) as con:
        cut = con.execute("""SELECT a.row_id, a.attempt, a.tier, a.input_tokens, a.output_tokens, a.cost_usd,
                                      a.usage_estimated, r.max_tokens, n.attempt, a.kind
                               FROM attempts a JOIN results r USING (run_id, row_id)
                               JOIN attempts n ON n.run_id = a.run_id AND n.row_id = a.row_id
                                 AND n.kind = a.kind AND n.tier = a.tier AND n.status <> 'interrupted'
                               WHERE a.status = 'interrupted'""").fetchall()
        prices = {"small": (0.10, 0.40), "mid": (0.20, 0.60), "premium": (2.50, 10.00)}
        for row, attempt, tier, inp, out, cost, estimated, max_tokens, resent_as, kind in cut:
            assert attempt < resent_as  # numbered just before the request that replaced it
            assert cost == pytest.approx((inp * prices[tier][0] + out * prices[tier][1]) / 1e6)
            if estimated and kind != "retry":  # no answer came back: output at max_tokens (a retry may double it)
                assert out == (max_tokens or 256) and inp > 0
        assert sum(1 for c in cut if c[6]) == o.interrupted_estimated
        # each row's cost is the sum of its attempts, interrupted ones included; so is the run's
        per_row = con.execute("""SELECT count(*) FROM results r JOIN (SELECT run_id, row_id, sum(cost_usd) AS c,
                                   count(*) AS n FROM attempts GROUP BY ALL) a USING (run_id, row_id)
                                   WHERE abs(r.cost_usd - a.c) > 1e-12 OR r.attempts <> a.n""").fetchone()[0]
        assert per_row == 0
        total, runs_total = con.execute("SELECT sum(r.cost_usd), any_value(u.cost_usd) FROM results r "
                                        "JOIN runs u USING (run_id)").fetchone()
        assert total == pytest.approx(runs_total) == pytest.approx(o.cost_usd)
