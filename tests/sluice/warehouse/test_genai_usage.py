"""The `genai_usage` view: one row per request, under OpenTelemetry GenAI names, with its cost."""

import re
from pathlib import Path

import duckdb
import pytest

from sluice.warehouse.views import VIEW_NAMES
from tests.support.sample_warehouse import build_sample_warehouse, land_genai_run

DOCS = Path(__file__).resolve().parents[3] / "docs" / "analysts.md"
COLS = ('run_id, row_id, attempt, attempt_kind, final_answer, "gen_ai.provider.name", "gen_ai.request.model", '
        '"gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens", '
        '"gen_ai.response.finish_reasons", cost, cost_currency, cost_source')


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = land_genai_run(build_sample_warehouse(tmp_path_factory.mktemp("wh") / "wh.duckdb"))
    c = duckdb.connect(str(path), read_only=True)
    yield c
    c.close()


def test_every_request_of_a_run_with_attempts(con):
    got = con.execute(f"SELECT {COLS} FROM genai_usage WHERE run_id = 'g1' ORDER BY row_id, attempt").fetchall()
    a = pytest.approx
    assert got == [
        ("g1", "g1", 1, "first", False, "vllm", "small-model", 100, 30, None, None, a(0.0002), "USD",
         "local GPU/CPU time"),
        ("g1", "g1", 2, "escalation", True, "anthropic", "claude-x", 120, 50, 30, ["stop"], a(0.003), "USD",
         "provider batch price"),
        ("g1", "g2", 1, "first", True, "vllm", "small-model", 80, 20, 0, ["stop"], a(0.0001), "USD",
         "local GPU/CPU time"),
        ("g1", "g2", 2, "shadow", False, "anthropic", "claude-x", 90, 25, None, None, a(0.002), "USD",
         "provider list price"),
        ("g1", "g3", 1, "first", True, "replay", "mixtral", 50, 10, 0, ["stop"], a(0.0004), "USD",
         "provider list price"),
    ]


def test_runs_without_attempts_show_their_sent_rows(con):
    got = con.execute(f"SELECT {COLS} FROM genai_usage WHERE run_id = 'r2' ORDER BY row_id").fetchall()
    assert [(r[1], r[5], r[7], r[8], r[10], r[13]) for r in got] == [
        ("s1", "vllm", 100, 80, ["stop"], "local GPU/CPU time"),
        ("s2", "vllm", 100, 20, ["stop"], "local GPU/CPU time"),
        ("s4", "openai", 0, 0, None, "provider list price"),  # failed: no finish reason
    ]


def test_tokens_and_cost_add_up_to_what_landed(con):
    # every request's tokens and cost, summed per run, equal the landed rows' sums (which add up their attempts)
    got = con.execute("""
        SELECT run_id, sum("gen_ai.usage.input_tokens"), sum("gen_ai.usage.output_tokens"), round(sum(cost), 9)
        FROM genai_usage GROUP BY 1 ORDER BY 1""").fetchall()
    want = con.execute("""
        SELECT run_id, sum(input_tokens), sum(output_tokens), round(sum(cost_usd), 9)
        FROM results GROUP BY 1 ORDER BY 1""").fetchall()
    assert got == want
    assert con.execute("SELECT round(sum(cost), 9) FROM genai_usage").fetchone()[0] == \
        con.execute("SELECT round(sum(cost_usd), 9) FROM runs").fetchone()[0]


def test_the_view_is_documented_with_its_columns():
    assert "genai_usage" in VIEW_NAMES
    text = DOCS.read_text()
    assert re.search(r"^\| `genai_usage` \|", text, flags=re.M)
    for name in ("gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model", "gen_ai.usage.input_tokens",
                 "gen_ai.usage.output_tokens", "gen_ai.usage.cache_read.input_tokens",
                 "gen_ai.response.finish_reasons", "cost_currency", "cost_source"):
        assert name in text
    assert "FROM genai_usage" in text
