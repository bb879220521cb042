import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from models.catalogue import load_catalogue
from models.pricing import tier_prices
from sluice.config import RouterSettings
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.route.assign import route_batch
from sluice.stages.route.policies import expected_quality, route_by_budget, row_tier_costs

TIERS = ["small", "mid", "premium"]


def random_batch(rng, n):
    costs = np.sort(rng.lognormal(-9, 1.5, size=(n, 3)), axis=1)  # tiers cheapest first, per row
    if rng.random() < 0.3:
        costs[:, 1] = costs[:, 0]  # a middle tier priced like the cheap one (same worker): a free upgrade
    return costs, expected_quality(rng.random(n), 3, mid_recovery=rng.random())


def test_budget_is_never_exceeded_by_more_than_one_rows_cost():
    rng = np.random.default_rng(0)
    for _ in range(300):
        n = int(rng.integers(1, 60))
        costs, quality = random_batch(rng, n)
        budget = float(rng.uniform(0, 1.2) * costs.sum(axis=0)[-1])
        plan = route_by_budget(costs, quality, budget)
        assert plan.planned_usd <= budget + costs.max() + 1e-12
        assert plan.planned_usd <= budget + 1e-12  # in fact it never exceeds it at all
        routed = plan.tier >= 0
        assert np.allclose(plan.cost[routed], costs[np.nonzero(routed)[0], plan.tier[routed]])
        if costs[:, 0].sum() <= budget:
            assert routed.all()


def test_more_money_never_buys_less_quality():
    rng = np.random.default_rng(1)
    costs, quality = random_batch(rng, 200)
    totals = []
    for budget in np.linspace(costs[:, 0].sum(), costs[:, 2].sum(), 12):
        plan = route_by_budget(costs, quality, float(budget))
        totals.append(quality[np.arange(200), plan.tier].sum())
    assert all(b >= a - 1e-9 for a, b in zip(totals, totals[1:]))
    assert (route_by_budget(costs, quality, float(costs[:, 2].sum()) + 1).tier == 2).all()


def test_upgrades_go_to_the_rows_that_gain_most_per_dollar():
    costs = np.array([[1.0, 2.0, 10.0]] * 4)
    quality = expected_quality(np.array([0.9, 0.1, 0.5, 0.2]), 3, mid_recovery=0.0)  # mid buys nothing
    plan = route_by_budget(costs, quality, 4 + 9 * 2)
    assert plan.tier.tolist() == [2, 0, 2, 0]


def test_a_budget_below_the_cheapest_tier_keeps_the_cheapest_rows_and_says_why():
    costs = np.array([[3.0, 5, 9], [1.0, 2, 3], [2.0, 4, 8]])
    plan = route_by_budget(costs, expected_quality(np.array([0.5, 0.5, 0.5]), 3), 3.5)
    assert plan.tier.tolist() == [-1, 0, 0]
    assert plan.planned_usd == 3.0
    assert "cannot cover the cheapest tier" in plan.message and "1 deferred" in plan.message
    assert (route_by_budget(costs, expected_quality(np.zeros(3), 3), 0.0).tier == -1).all()
    with pytest.raises(ValueError):
        route_by_budget(costs, expected_quality(np.zeros(3), 3), -1.0)


def test_self_hosted_tiers_are_priced_from_worker_time_and_throughput():
    cat = load_catalogue()
    prices = {p.name: p for p in tier_prices(cat, self_hosted_tokens_per_s=500.0)}
    small = cat.tier("small")
    assert prices["small"].usd_per_output_token == pytest.approx(cat.worker_usd_per_hour(small) / 3600 / 500)
    assert prices["premium"].usd_per_output_token == pytest.approx(cat.tier("premium").output_usd_per_1m / 1e6)
    faster = cat.model_copy(update={"tiers": [small.model_copy(update={"tokens_per_s": 1000.0}), *cat.tiers[1:]]})
    assert tier_prices(faster, 500.0)[0].usd_per_output_token == pytest.approx(prices["small"].usd_per_output_token / 2)
    costs = row_tier_costs(np.array([100.0]), np.array([10.0]), list(prices.values()))
    assert costs[0, 2] == pytest.approx(100 * 2.5e-6 + 10 * 10e-6)


def test_route_batch_under_a_budget_lands_unaffordable_rows_with_a_reason():
    cat = load_catalogue()
    table = validate_prompts(pa.table({"prompt": ["hi", "Prove Fermat's little theorem step by step."] * 5}))
    cheapest = sum(row_tier_costs(np.array([10.0]), np.array([256.0]), tier_prices(cat, 500.0))[0, :1])
    out = pl.from_arrow(route_batch(table, TIERS, RouterSettings(budget_usd=cheapest * 4.5), cat))
    assert out["tier"].null_count() == 6
    over = out.filter(pl.col("status") == "deferred")
    assert over.height == 6 and over["error"][0].startswith("heuristic: score=")
    assert "cannot cover the cheapest tier for all 10 rows" in over["error"][0]
    rich = pl.from_arrow(route_batch(table, TIERS, RouterSettings(budget_usd=1.0), cat))
    assert (rich["status"] == "pending").all() and (rich["tier"] == "premium").all()
    assert "budget $1" in rich["route_reason"][0] and "planned $" in rich["route_reason"][0]
    with pytest.raises(ValueError, match="catalogue"):
        route_batch(table, TIERS, RouterSettings(budget_usd=1.0))


def test_cli_route_under_a_budget_too_small_marks_rows_and_says_why(tmp_path):
    from typer.testing import CliRunner

    from sluice.cli import app

    batch = tmp_path / "in.parquet"
    pl.DataFrame({"prompt": ["hi", "Prove that 7 is prime, step by step."] * 3}).write_parquet(batch)
    out = tmp_path / "out.parquet"
    res = CliRunner().invoke(app, ["route", str(batch), "-o", str(out), "--budget-usd", "0"])
    assert res.exit_code == 0, res.output
    said = " ".join(res.output.split())  # as printed, wrapped to the terminal's width
    assert "6 rows not routed" in said and "cannot cover the cheapest tier" in said
    routed = pl.read_parquet(out)
    assert routed.columns == ["prompt", "tier", "route_score", "route_reason"]
    assert routed["tier"].null_count() == 6 and routed["route_reason"].str.contains("deferred").all()
