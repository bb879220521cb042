"""The analyst views on the hand-built warehouse of tests/support/sample_warehouse.py: numbers worked by hand."""

import re
from pathlib import Path

import duckdb
import pytest

from tests.support.sample_warehouse import build_sample_warehouse

DOCS = Path(__file__).resolve().parents[3] / "docs" / "analysts.md"


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = build_sample_warehouse(tmp_path_factory.mktemp("wh") / "wh.duckdb")
    c = duckdb.connect(str(path), read_only=True)
    yield c
    c.close()


def rows(con, sql):
    return con.execute(sql).fetchall()


def test_cost_per_1k_requests(con):
    got = rows(con, """SELECT CAST(day AS VARCHAR), tier, model, requests, cost_usd, cost_per_1k_usd,
                              baseline_per_1k_usd
                       FROM cost_per_1k_requests WHERE tier IS NOT NULL ORDER BY day, tier""")
    assert got == [
        ("2026-01-05", "premium", "premium-model", 2, pytest.approx(0.009), pytest.approx(4.5), pytest.approx(4.5)),
        ("2026-01-05", "small", "small-model", 3, pytest.approx(0.0025), pytest.approx(2.5 / 3),
         pytest.approx(10 / 3)),
        ("2026-01-06", "premium", "premium-model", 1, 0.0, 0.0, 0.0),
        ("2026-01-06", "small", "small-model", 2, pytest.approx(0.002), pytest.approx(1.0), pytest.approx(3.5)),
    ]
    # rows never sent count as free requests, under tier NULL
    assert rows(con, "SELECT sum(requests), sum(baseline_cost_usd) FROM cost_per_1k_requests WHERE tier IS NULL") \
        == [(4, pytest.approx(0.012))]


def test_tokens_per_request(con):
    got = rows(con, """SELECT run_id, tier, requests, input_tokens, output_tokens, avg_input_tokens,
                              avg_output_tokens, avg_total_tokens, max_total_tokens
                       FROM tokens_per_request ORDER BY run_id, tier""")
    assert got == [
        ("r1", "premium", 2, 400, 150, 200.0, 75.0, 275.0, 400),
        ("r1", "small", 3, 350, 100, pytest.approx(350 / 3), pytest.approx(100 / 3), 150.0, 260),
        ("r2", "premium", 1, 0, 0, 0.0, 0.0, 0.0, 0),
        ("r2", "small", 2, 200, 100, 100.0, 50.0, 150.0, 180),
    ]


def test_latency_percentiles(con):
    # small: 100, 200, 400, 500 ms (failed rows excluded); premium: 1000, 2000 ms; linear interpolation
    got = rows(con, "SELECT tier, requests, p50_ms, p90_ms, p99_ms, max_ms FROM latency_percentiles ORDER BY tier")
    assert got == [
        ("premium", 2, 1500.0, 1900.0, 1990.0, 2000.0),
        ("small", 4, 300.0, pytest.approx(470.0), pytest.approx(497.0), 500.0),
    ]


def test_error_rates(con):
    got = rows(con, """SELECT run_id, tier, rows, failed, quarantined, failure_rate, error_rate
                       FROM error_rates ORDER BY run_id, tier NULLS LAST""")
    assert got == [
        ("r1", "premium", 2, 0, 0, 0.0, 0.0),
        ("r1", "small", 3, 1, 0, pytest.approx(1 / 3), pytest.approx(1 / 3)),
        ("r1", None, 3, 0, 1, 0.0, pytest.approx(1 / 3)),
        ("r2", "premium", 1, 1, 0, 1.0, 1.0),
        ("r2", "small", 2, 0, 0, 0.0, 0.0),
        ("r2", None, 1, 0, 0, 0.0, 0.0),
    ]


def test_utilisation_lists_self_hosted_tiers_only(con):
    got = rows(con, """SELECT run_id, tier, billed_seconds, busy_fraction, usd_per_billed_hour, rows_per_billed_hour,
                              output_tokens, output_tokens_per_s
                       FROM utilisation ORDER BY run_id""")
    assert got == [
        ("r1", "small", 100.0, 0.6, pytest.approx(0.09), pytest.approx(108.0), 100, pytest.approx(100 / 60)),
        ("r2", "small", 50.0, 1.0, pytest.approx(0.144), pytest.approx(144.0), 100, 2.0),
    ]


def test_savings_per_run_attributes_every_cent(con):
    got = rows(con, """SELECT run_id, rows, baseline_cost_usd, dedup_saving_usd, cache_saving_usd, routing_saving_usd,
                              trim_saving_usd, batch_saving_usd, waste_usd, cost_usd, saving_usd, saving_pct
                       FROM savings_per_run ORDER BY run_id""")
    a = pytest.approx
    assert got == [
        # r1: dedup r6 0.004; cache r7 0.003; routing r1 0.003 + r2 0.005 (+0 on premium); waste r3 0.0005
        ("r1", 8, a(0.026), a(0.004), a(0.003), a(0.008), 0.0, 0.0, a(0.0005), a(0.0115), a(0.0145),
         a(100 * 0.0145 / 0.026)),
        ("r2", 4, a(0.012), a(0.005), 0.0, a(0.005), 0.0, 0.0, 0.0, a(0.002), a(0.010), a(100 * 10 / 12)),
    ]
    # the parts add up to the saving, row by row
    assert rows(con, """SELECT count(*) FROM savings_per_row WHERE abs(saving_usd - (dedup_saving_usd
                        + cache_saving_usd + routing_saving_usd + trim_saving_usd + batch_saving_usd - waste_usd))
                        > 1e-12""") == [(0,)]


def test_savings_per_row(con):
    got = rows(con, """SELECT row_id, dedup_saving_usd, cache_saving_usd, routing_saving_usd, waste_usd
                       FROM savings_per_row WHERE run_id = 'r1' ORDER BY row_id""")
    a = pytest.approx
    assert got == [
        ("r1", 0.0, 0.0, a(0.003), 0.0), ("r2", 0.0, 0.0, a(0.005), 0.0), ("r3", 0.0, 0.0, 0.0, a(0.0005)),
        ("r4", 0.0, 0.0, 0.0, 0.0), ("r5", 0.0, 0.0, 0.0, 0.0), ("r6", a(0.004), 0.0, 0.0, 0.0),
        ("r7", 0.0, a(0.003), 0.0, 0.0), ("r8", 0.0, 0.0, 0.0, 0.0),
    ]


def test_breakeven(con):
    got = rows(con, """SELECT run_id, self_hosted_rows, self_hosted_usd, start_usd, gen_usd, api_usd,
                              self_hosting_saves_usd, self_hosting_cheaper, breakeven_rows
                       FROM breakeven ORDER BY run_id""")
    a = pytest.approx
    assert got == [
        # r1: start 40/100 of $0.0025 = 0.001, generation 0.0015; API for r1+r2 = 0.010 -> 0.001 / (0.0085 / 3)
        ("r1", 3.0, a(0.0025), a(0.001), a(0.0015), a(0.010), a(0.0075), True, a(0.001 / (0.0085 / 3))),
        ("r2", 2.0, a(0.002), 0.0, a(0.002), a(0.007), a(0.005), True, 0.0),
    ]


def doc_queries():
    text = DOCS.read_text()
    return re.findall(r"```sql\n(.*?)```", text, flags=re.S)


def test_the_docs_have_ten_example_queries():
    assert len(doc_queries()) >= 10


@pytest.mark.parametrize("i", range(len(doc_queries())))
def test_each_docs_query_runs(con, i):
    sql = doc_queries()[i]
    result = con.execute(sql).fetchall()
    if i < 10:  # the ten examples have something to show on the sample warehouse
        assert result, f"docs/analysts.md query {i + 1} returned no rows on the sample warehouse:\n{sql}"


def test_utilisation_adds_up_a_tiers_passes(tmp_path):
    # a tier answered in several passes (its routed rows, then rows escalated to it) bills each pass under
    # "<tier>/<pass>": the view reports the tier once, with every pass's time, cost and rows
    path = build_sample_warehouse(tmp_path / "wh.duckdb")
    with duckdb.connect(str(path)) as c:
        c.execute("""UPDATE runs SET billing = json_merge_patch(billing,
                     '{"small/escalation": {"rows": 2, "billed_seconds": 10.0, "engine_start_s": 0.0,
                                            "generate_s": 10.0, "cost_usd": 0.001}}') WHERE run_id = 'r2'""")
        got = rows(c, "SELECT tier, billed_seconds, generate_s FROM utilisation WHERE run_id = 'r2'")
    assert got == [("small", pytest.approx(60.0), pytest.approx(60.0))]  # 50 s + the 10 s pass
