"""Spend a batch's budget where it buys the most answer quality: share calibration and dollar-budget routing.

Two ways to turn router scores (estimated probability that the premium tier is needed) into tiers for a batch:

`route_by_thresholds` fixed score thresholds (`RouterSettings.small_below`, `premium_from`).
`route_by_share`  RouteLLM's calibration: the threshold is the quantile of the scores on this batch itself, so
                  exactly round(share x rows) rows go to the premium tier, whatever the score distribution.
`route_by_budget` fill a dollar budget for the whole batch. Every row first gets the cheapest tier; then
                  upgrades are bought in order of expected quality gained per dollar until the next one no longer
                  fits. This is the greedy solution of the multiple-choice knapsack (optimal for its LP relaxation
                  once each row's options are reduced to their upper convex hull, so a row's upgrades come in the
                  order of falling efficiency). An upgrade that does not fit is skipped and cheaper ones after it are
                  still tried, so the plan never exceeds the budget at all (the stated bound, one row's cost, is
                  loose). If the budget cannot cover the cheapest tier for every row, the cheapest rows are kept
                  (most rows answered) and the rest are marked `deferred` with a reason, never dropped.

The plan is the first of two layers. Its costs are estimates made before anything is sent, and it covers only
first answers; the run's ledger (sluice.stages.budget) then holds every pass to the same budget: first answers,
cascade escalations, the shadow sample, schema retries and the judge each reserve their cost before they send.

Costs are planned from estimates, before any answer exists:
    input tokens  `models.tokens.estimate_tokens` of prompt and system prompt, + 8 (chat template overhead)
    output tokens = the row's max_tokens cap (an upper bound, so the real bill is at most the plan)
    API tiers      list prices per token from the catalogue
    self-hosted    worker $/hour / 3600 / tokens_per_s: the catalogue tier's `tokens_per_s` (tokens in + out per
                   second that the worker sustains with continuous batching) or `RouterSettings.self_hosted_tokens_per_s`.
                   This matches how `sluice.stages.infer.answer` bills self-hosted rows: worker time apportioned by tokens.
Expected quality of a row on tier k (score s = P(cheapest tier falls short)):
    q_0 = 1 - s,  q_last = 1,  middle tiers q_k = 1 - s (1 - r_k), r_k = mid_recovery x k / (tiers - 2):
    the share of the cheap tier's failures a middle tier is assumed to recover (0.5 by default; a documented
    assumption until shadow labels for the middle tier exist).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from models.pricing import TierPrice, cost_usd
from models.tokens import estimate_tokens

TEMPLATE_TOKENS = 8


def estimate_input_tokens(prompts: Sequence[str | None], systems: Sequence[str | None] | None = None) -> np.ndarray:
    tokens = np.array([estimate_tokens(p) for p in prompts], dtype=np.float64)
    if systems is not None:
        tokens += np.array([estimate_tokens(s) for s in systems], dtype=np.float64)
    return tokens + TEMPLATE_TOKENS


def row_tier_costs(input_tokens: np.ndarray, output_tokens: np.ndarray, prices: Sequence[TierPrice]) -> np.ndarray:
    """(rows, tiers) planned USD cost of each row on each tier."""
    return np.column_stack([cost_usd(p, input_tokens, output_tokens) for p in prices])


def expected_quality(scores: np.ndarray, n_tiers: int, mid_recovery: float = 0.5) -> np.ndarray:
    """(rows, tiers) expected quality of each row on each tier (module docstring)."""
    s = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    recovery = np.array([0.0] + [mid_recovery * k / max(n_tiers - 2, 1) for k in range(1, n_tiers - 1)] + [1.0])
    return 1.0 - s[:, None] * (1.0 - recovery[None, :])


def route_by_thresholds(scores: np.ndarray, small_below: float, premium_from: float, n_tiers: int) -> np.ndarray:
    """Tier index per row: the cheapest below `small_below`, the last from `premium_from`, the middle tiers
    splitting the band between evenly."""
    span = max(premium_from - small_below, 1e-9)
    mid = np.clip(np.floor((scores - small_below) / span * max(n_tiers - 2, 1)), 0, max(n_tiers - 3, 0))
    return np.where(scores < small_below, 0, np.where(scores >= premium_from, n_tiers - 1, 1 + mid)).astype(np.int64)


def route_by_share(scores: np.ndarray, premium_share: float, mid_share: float = 0.0, n_tiers: int = 3) -> np.ndarray:
    """Tier index per row: the top round(premium_share x n) scores -> the last tier, the next round(mid_share x n)
    -> the middle tier(s) (split evenly, higher scores to the dearer tier), the rest -> tier 0.

    Ranking (not a float threshold) makes the share exact even with tied scores; ties go to the earlier row."""
    if not 0.0 <= premium_share <= 1.0 or not 0.0 <= mid_share <= 1.0:
        raise ValueError("shares must be in [0, 1]")
    n = len(scores)
    order = np.lexsort((np.arange(n), -np.asarray(scores, dtype=np.float64)))  # highest score first
    tier = np.zeros(n, dtype=np.int64)
    k_premium = int(round(premium_share * n))
    tier[order[:k_premium]] = n_tiers - 1
    middle = n_tiers - 2
    if middle > 0:
        k_mid = min(int(round(mid_share * n)), n - k_premium)
        band = order[k_premium:k_premium + k_mid]
        for j, chunk in enumerate(np.array_split(band, middle)):
            tier[chunk] = n_tiers - 2 - j
    return tier


def premium_threshold(scores: np.ndarray, premium_share: float) -> float:
    """The score quantile that sends `premium_share` of this batch to premium (RouteLLM's calibration)."""
    if len(scores) == 0:
        return 1.0
    return float(np.quantile(scores, 1.0 - premium_share))


@dataclass
class BudgetPlan:
    tier: np.ndarray  # tier index per row, -1 where the budget could not cover the row at all
    cost: np.ndarray  # planned USD per row (0 where -1)
    budget_usd: float
    message: str

    @property
    def planned_usd(self) -> float:
        return float(self.cost.sum())


def _hull(costs: np.ndarray, quality: np.ndarray) -> list[int]:
    """Indices of one row's options on the upper convex hull of (cost, quality), cheapest first."""
    opts = sorted(range(len(costs)), key=lambda k: (costs[k], -quality[k]))
    hull: list[int] = []
    for k in opts:
        if hull and quality[k] <= quality[hull[-1]]:
            continue  # dearer and no better
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # drop b if it lies under the segment a -> k (its marginal efficiency is below k's)
            if (quality[b] - quality[a]) * (costs[k] - costs[a]) <= (quality[k] - quality[a]) * (costs[b] - costs[a]):
                hull.pop()
            else:
                break
        hull.append(k)
    return hull


def route_by_budget(costs: np.ndarray, quality: np.ndarray, budget_usd: float,
                    first: np.ndarray | None = None) -> BudgetPlan:
    """Tier per row maximising total expected quality within `budget_usd` (greedy, module docstring). `first`:
    rows kept before any other when the budget cannot cover every row (rows an earlier run deferred)."""
    n, n_tiers = costs.shape
    if budget_usd < 0 or not math.isfinite(budget_usd):
        raise ValueError(f"budget must be a non-negative number of dollars, got {budget_usd}")
    tier = np.full(n, -1, dtype=np.int64)
    hulls = [_hull(costs[i], quality[i]) for i in range(n)]
    # each row's cheapest option (tier 0 in a cheapest-first catalogue; the better of equally cheap ones)
    base = np.array([h[0] for h in hulls], dtype=np.int64)
    base_cost = costs[np.arange(n), base]
    floor = float(base_cost.sum())
    if floor > budget_usd:
        # keep as many rows as the budget covers: `first` rows, then the cheapest rows, ties by position
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
    steps = []  # (efficiency, row, step index, from, to, extra cost)
    for i, h in enumerate(hulls):
        for j in range(1, len(h)):
            dc = costs[i, h[j]] - costs[i, h[j - 1]]
            dq = quality[i, h[j]] - quality[i, h[j - 1]]
            eff = math.inf if dc <= 0 else dq / dc
            steps.append((eff, i, j, h[j - 1], h[j], dc))
    steps.sort(key=lambda s: (-s[0], s[1], s[2]))
    for _, i, _, frm, to, dc in steps:
        if tier[i] != frm:
            continue  # an earlier upgrade of this row did not fit
        if spent + dc <= budget_usd + 1e-15:
            tier[i] = to
            spent += dc
    cost = costs[np.arange(n), tier]
    upgraded = int((tier != base).sum())
    msg = f"budget ${budget_usd:.6g}: planned ${float(cost.sum()):.6g}, {upgraded} of {n} rows above the cheapest tier"
    return BudgetPlan(tier, cost, budget_usd, msg)
