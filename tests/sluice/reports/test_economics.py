import json

import pytest

from models.catalogue import Catalogue
from sluice.reports.economics import economics_lines, run_economics
from sluice.warehouse.db import connect

CAT = Catalogue.model_validate({
    "baseline": "premium",
    "workers": {"cpu": {"usd_per_hour": 0.36, "memory_bandwidth_gbs": 10},
                "gpu": {"usd_per_hour": 3.6, "memory_bandwidth_gbs": 500},
                "mystery": {"usd_per_hour": 1.0}},
    "tiers": [
        {"name": "small", "backend": "vllm", "model": "m", "worker": "cpu"},
        {"name": "premium", "backend": "openai", "model": "p", "base_url": "http://x", "input_usd_per_1m": 1,
         "output_usd_per_1m": 1},
    ],
})


@pytest.fixture
def warehouse(tmp_path):
    path = tmp_path / "wh.duckdb"
    with connect(path) as con:
        billing = {"small": {"engine_start_s": 20.0, "generate_s": 100.0, "billed_seconds": 120.0, "cost_usd": 0.012,
                             "rows": 2.0}, "premium": {"cost_usd": 0.5}}
        con.execute("INSERT INTO runs (run_id, dataset, rows, billing) VALUES ('r', 'd', 3, ?)", [json.dumps(billing)])
        for rid, tier, out, base in [("a", "small", 3000, 0.05), ("b", "small", 2000, 0.05), ("c", "premium", 10, 0.5)]:
            con.execute("INSERT INTO results (run_id, dataset, row_id, tier, status, output_tokens, baseline_cost_usd)"
                        " VALUES ('r', 'd', ?, ?, 'ok', ?, ?)", [rid, tier, out, base])
    return path


def test_worker_classes_are_compared_at_measured_and_scaled_throughput(warehouse):
    [e] = run_economics(warehouse, "r", CAT)
    assert (e.tier, e.rows, e.output_tokens) == ("small", 2, 5000)
    assert e.measured_tok_per_s == pytest.approx(50.0)  # 5000 tokens in 100 s of generation
    assert e.api_usd == pytest.approx(0.10)
    by = {o.worker: o for o in e.options}
    assert (by["cpu"].source, by["cpu"].out_tok_per_s) == ("measured", pytest.approx(50.0))
    assert by["cpu"].usd_per_1m_output == pytest.approx(0.36 / (3600 * 50) * 1e6)  # $2.00
    assert by["cpu"].batch_usd == pytest.approx((20 + 100) / 3600 * 0.36)  # the bill it actually ran up
    assert (by["gpu"].source, by["gpu"].out_tok_per_s) == ("estimate (bandwidth)", pytest.approx(2500.0))
    assert by["gpu"].batch_usd == pytest.approx((20 + 2.0) / 3600 * 3.6)
    assert by["mystery"].batch_usd is None
    assert e.cheapest.worker == "cpu"  # 0.012 < 0.022: the start time dominates on the fast class
    month = e.per_night()
    assert month["always_on_usd_month"] == pytest.approx(24 * 0.36 * 30)
    assert month["scale_to_zero_usd_month"] == pytest.approx(0.012 * 30)
    text = "\n".join(economics_lines([e]))
    assert "cheapest worker class for this tier: cpu" in text and "self-hosting is cheaper" in text


def test_declared_throughput_beats_the_estimate(warehouse):
    cat = CAT.model_copy(deep=True)
    cat.tiers[0].throughput_by_worker = {"gpu": 100_000.0}
    [e] = run_economics(warehouse, "r", cat)
    gpu = {o.worker: o for o in e.options}["gpu"]
    assert (gpu.source, gpu.out_tok_per_s) == ("declared", 100_000.0)
    assert gpu.batch_usd == pytest.approx((20 + 0.05) / 3600 * 3.6)


def test_unknown_run(warehouse):
    with pytest.raises(KeyError, match="no run 'nope'"):
        run_economics(warehouse, "nope", CAT)
