"""Chargeback views on the hand-built warehouse (tests/support/sample_warehouse.py): run r1 tagged team=search, rows
r4 team=ads (its own value wins) and r5 feature=faq; run r2 untagged but for s1 team=search. Numbers by hand."""

import duckdb
import pytest

from tests.support.sample_warehouse import build_sample_warehouse

a = pytest.approx


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_sample_warehouse(tmp_path_factory.mktemp("wh") / "wh.duckdb")
    c = duckdb.connect(str(path), read_only=True)
    yield c
    c.close()


def test_rows_carry_the_runs_tags_overlaid_by_their_own(con):
    got = dict(con.execute("SELECT row_id, CAST(tags AS VARCHAR) FROM results WHERE row_id IN ('r1', 'r4', 'r5', "
                           "'s1', 's2')").fetchall())
    assert got == {"r1": '{"team": "search"}', "r4": '{"team": "ads"}',
                   "r5": '{"feature": "faq", "team": "search"}', "s1": '{"team": "search"}', "s2": None}
    assert con.execute("SELECT run_id, CAST(tags AS VARCHAR) FROM runs ORDER BY 1").fetchall() == [
        ("r1", '{"team": "search"}'), ("r2", None)]


def test_cost_by_tag(con):
    got = con.execute("""SELECT CAST(night AS VARCHAR), tag_key, tag_value, runs, rows, requests, cost_usd,
                                baseline_cost_usd, saving_usd
                         FROM cost_by_tag ORDER BY night, tag_key, tag_value NULLS LAST""").fetchall()
    assert got == [
        # night 1 (run r1): every row once under each key; r5 has the run's team and its own feature
        ("2026-01-05", "feature", "faq", 1, 1, 1, a(0.004), a(0.004), a(0.0)),
        ("2026-01-05", "feature", None, 1, 7, 4, a(0.0075), a(0.022), a(0.0145)),
        ("2026-01-05", "team", "ads", 1, 1, 1, a(0.005), a(0.005), a(0.0)),
        ("2026-01-05", "team", "search", 1, 7, 4, a(0.0065), a(0.021), a(0.0145)),
        # night 2 (run r2): only s1 is tagged; the other rows under a NULL value
        ("2026-01-06", "team", "search", 1, 1, 1, a(0.001), a(0.005), a(0.004)),
        ("2026-01-06", "team", None, 1, 3, 2, a(0.001), a(0.007), a(0.006)),
    ]


def test_one_key_adds_up_to_the_runs_total(con):
    got = con.execute("""SELECT c.tag_key, u.run_id, sum(c.rows), sum(c.cost_usd), any_value(u.rows),
                                any_value(u.cost_usd), sum(c.baseline_cost_usd), any_value(u.baseline_cost_usd)
                         FROM cost_by_tag c JOIN runs u
                           ON CAST(timezone('UTC', u.started_at) AS DATE) = c.night AND u.dataset = c.dataset
                         GROUP BY ALL ORDER BY 2, 1""").fetchall()
    assert [r[:2] for r in got] == [("feature", "r1"), ("team", "r1"), ("team", "r2")]
    for _, _, rows, cost, run_rows, run_cost, base, run_base in got:
        assert (rows, cost, base) == (run_rows, a(run_cost), a(run_base))


def test_savings_by_tag_attributes_every_cent(con):
    got = con.execute("""SELECT tag_value, rows, dedup_saving_usd, cache_saving_usd, routing_saving_usd, waste_usd,
                                saving_usd, saving_pct
                         FROM savings_by_tag WHERE night = DATE '2026-01-05' AND tag_key = 'team'
                         ORDER BY tag_value""").fetchall()
    # search: r1 0.003 + r2 0.005 routing, r3 wastes 0.0005, r5 0 (premium), r6 exact 0.004, r7 cache 0.003
    assert got == [("ads", 1, 0.0, 0.0, a(0.0), 0.0, a(0.0), a(0.0)),
                   ("search", 7, a(0.004), a(0.003), a(0.008), a(0.0005), a(0.0145), a(100 * 0.0145 / 0.021))]
