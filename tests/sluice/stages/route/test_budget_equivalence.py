"""`route_by_budget` (array operations) makes the same plan as the per-row reference it replaced.

`reference_route_by_budget` below is the implementation before vectorisation, kept verbatim as the reference:
each row's hull built in a Python loop, every upgrade step a tuple, sorted, then bought one at a time."""

import math

import numpy as np
import pytest

from sluice.stages.route.policies import BudgetPlan, expected_quality, route_by_budget


def _reference_hull(costs, quality):
    opts = sorted(range(len(costs)), key=lambda k: (costs[k], -quality[k]))
    hull = []
    for k in opts:
        if hull and quality[k] <= quality[hull[-1]]:
            continue
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (quality[b] - quality[a]) * (costs[k] - costs[a]) <= (quality[k] - quality[a]) * (costs[b] - costs[a]):
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def reference_route_by_budget(costs, quality, budget_usd, first=None):
    n, n_tiers = costs.shape
    if budget_usd < 0 or not math.isfinite(budget_usd):
        raise ValueError(f"budget must be a non-negative number of dollars, got {budget_usd}")
    tier = np.full(n, -1, dtype=np.int64)
    hulls = [_reference_hull(costs[i], quality[i]) for i in range(n)]
    base = np.array([h[0] for h in hulls], dtype=np.int64)
    base_cost = costs[np.arange(n), base]
    floor = float(base_cost.sum())
    if floor > budget_usd:
        order = np.lexsort((np.arange(n), base_cost, np.zeros(n) if first is None else ~np.asarray(first, bool)))
        fits = np.cumsum(base_cost[order]) <= budget_usd
        kept = order[fits]
        tier[kept] = base[kept]
        cost = np.where(tier >= 0, base_cost, 0.0)
        msg = (f"budget ${budget_usd:.6g} cannot cover the cheapest tier for all {n} rows (needs ${floor:.6g}): "
               f"{len(kept)} rows routed, {n - len(kept)} deferred")
        return BudgetPlan(tier, cost, budget_usd, msg)
    tier[:] = base
    spent = floor
    steps = []
    for i, h in enumerate(hulls):
        for j in range(1, len(h)):
            dc = costs[i, h[j]] - costs[i, h[j - 1]]
            dq = quality[i, h[j]] - quality[i, h[j - 1]]
            eff = math.inf if dc <= 0 else dq / dc
            steps.append((eff, i, j, h[j - 1], h[j], dc))
    steps.sort(key=lambda s: (-s[0], s[1], s[2]))
    for _, i, _, frm, to, dc in steps:
        if tier[i] != frm:
            continue
        if spent + dc <= budget_usd + 1e-15:
            tier[i] = to
            spent += dc
    cost = costs[np.arange(n), tier]
    upgraded = int((tier != base).sum())
    msg = f"budget ${budget_usd:.6g}: planned ${float(cost.sum()):.6g}, {upgraded} of {n} rows above the cheapest tier"
    return BudgetPlan(tier, cost, budget_usd, msg)


def assert_same_plan(costs, quality, budget, first=None):
    want = reference_route_by_budget(costs, quality, budget, first)
    got = route_by_budget(costs, quality, budget, first)
    assert got.tier.tolist() == want.tier.tolist()
    assert got.cost.tolist() == want.cost.tolist()  # the same floats, not just close
    assert got.message == want.message
    return got


def random_batch(rng, n, n_tiers, ties):
    """Costs cheapest tier first per row (mostly: a few rows out of order), quality from router scores. With
    `ties`, costs and scores are drawn from a few values, so rows, steps and efficiencies tie exactly; some rows
    price two tiers alike (a free upgrade) or give two tiers the same quality."""
    if ties:
        costs = np.sort(rng.choice([1e-5, 2e-5, 4e-5, 1e-4, 3e-4], size=(n, n_tiers)), axis=1)
        scores = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=n)
    else:
        costs = np.sort(rng.lognormal(-9, 1.5, size=(n, n_tiers)), axis=1)
        scores = rng.random(n)
    quality = expected_quality(scores, n_tiers, mid_recovery=float(rng.choice([0.0, 0.5, rng.random()])))
    if n_tiers > 2:
        same = rng.random(n) < 0.2
        costs[same, 1] = costs[same, 0]
        flat = rng.random(n) < 0.1
        quality[flat, 1] = quality[flat, 0]
    shuffled = rng.random(n) < 0.05  # a catalogue not cheapest first, for some rows
    costs[shuffled] = costs[shuffled][:, ::-1]
    return costs, quality


@pytest.mark.parametrize("n_tiers", [2, 3, 4])
@pytest.mark.parametrize("ties", [False, True])
def test_same_plan_as_the_reference_on_random_rows(n_tiers, ties):
    rng = np.random.default_rng(100 * n_tiers + ties)
    for _ in range(4):
        n = int(rng.integers(2000, 4000))
        costs, quality = random_batch(rng, n, n_tiers, ties)
        first = rng.random(n) < 0.1
        cheapest, dearest = costs.min(axis=1).sum(), costs.max(axis=1).sum()
        budgets = [0.0, cheapest * 0.5, cheapest, *np.linspace(cheapest, dearest, 7)[1:], dearest * 2]
        for budget in budgets:
            assert_same_plan(costs, quality, float(budget), first)
        # a budget that lands exactly on a running total: the reference's `<= budget + 1e-15` boundary
        plan = reference_route_by_budget(costs, quality, float(cheapest + (dearest - cheapest) / 3))
        assert_same_plan(costs, quality, plan.planned_usd)


def test_same_plan_when_upgrades_are_many_small_and_a_few_large():
    # the money left after the first miss is then spent over many rounds of small steps
    rng = np.random.default_rng(7)
    n = 3000
    costs = np.column_stack([np.full(n, 1e-6), np.where(rng.random(n) < 0.5, 2e-6, 1e-3), np.full(n, 2e-3)])
    costs[:, 1] += rng.integers(0, 5, n) * 1e-7
    quality = expected_quality(rng.random(n), 3)
    for budget in np.linspace(costs[:, 0].sum(), costs[:, 2].sum(), 25):
        assert_same_plan(costs, quality, float(budget))


def test_same_plan_on_empty_and_single_tier_batches():
    assert_same_plan(np.zeros((0, 3)), np.zeros((0, 3)), 1.0)
    costs = np.array([[1.0], [2.0]])
    assert_same_plan(costs, np.ones((2, 1)), 5.0)
    assert_same_plan(costs, np.ones((2, 1)), 1.5)


@pytest.mark.parametrize("rounds", [0, 1, 2])
def test_same_plan_when_the_rest_is_walked_step_by_step(monkeypatch, rounds):
    from sluice.stages.route import policies

    buy = policies._buy_upgrades
    monkeypatch.setattr(policies, "_buy_upgrades", lambda *a: buy(*a, rounds=rounds))
    rng = np.random.default_rng(rounds)
    for ties in (False, True):
        costs, quality = random_batch(rng, 3000, 3, ties)
        for budget in np.linspace(costs.min(axis=1).sum(), costs.max(axis=1).sum(), 9):
            assert_same_plan(costs, quality, float(budget))


# Rows on the hull whose upgrade efficiencies cross when rounded (0.58616302304173720 then ...730): the second step
# sorts before the first, so the row never reaches its dearest tier, however much money there is.
CROSSING = [
    ([0.3773835047623879, 0.5504321583087981, 0.9770285342829964],
     [0.11877534398643497, 0.220210065882501, 0.4702650872421866]),
    ([0.0596179701415831, 0.16360427430646496, 0.9178119750606547],
     [0.006784398712536888, 0.05773544370790775, 0.4272809411231306]),
]


def test_same_plan_when_a_rows_upgrade_efficiencies_cross_by_rounding():
    rng = np.random.default_rng(11)
    costs, quality = random_batch(rng, 500, 3, ties=False)
    costs = np.vstack([costs, [c for c, _ in CROSSING]])
    quality = np.vstack([quality, [q for _, q in CROSSING]])
    for budget in np.linspace(costs.min(axis=1).sum(), costs.max(axis=1).sum() + 1, 9):
        plan = assert_same_plan(costs, quality, float(budget))
    assert plan.tier[-2:].tolist() == [1, 1]
