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


def _hulls(costs: np.ndarray, quality: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every row's options on the upper convex hull of (cost, quality), cheapest first: (rows, tiers) tier indices,
    the first `length[i]` of row i valid, and `length`. Andrew's monotone chain, run on all rows at once (one
    column of options at a time: the catalogue has a handful of tiers, the batch a million rows)."""
    n, n_tiers = costs.shape
    rows = np.arange(n)
    # cheapest first, the better of equally cheap ones first, ties by tier index (lexsort is stable)
    opts = np.lexsort((np.broadcast_to(np.arange(n_tiers), (n, n_tiers)), -quality, costs), axis=-1)
    hull = np.zeros((n, n_tiers), dtype=np.int64)
    length = np.zeros(n, dtype=np.int64)
    for t in range(n_tiers):
        k = opts[:, t]
        qk, ck = quality[rows, k], costs[rows, k]
        top = hull[rows, np.maximum(length - 1, 0)]
        live = (length == 0) | (qk > quality[rows, top])  # else dearer and no better
        while True:
            # drop b if it lies under the segment a -> k (its marginal efficiency is below k's)
            can = live & (length >= 2)
            a = hull[rows, np.maximum(length - 2, 0)]
            b = hull[rows, np.maximum(length - 1, 0)]
            qa, ca = quality[rows, a], costs[rows, a]
            under = can & ((quality[rows, b] - qa) * (ck - ca) <= (qk - qa) * (costs[rows, b] - ca))
            if not under.any():
                break
            length -= under
        hull[rows[live], length[live]] = k[live]
        length += live
    return hull, length


def _upgrade_steps(costs: np.ndarray, quality: np.ndarray, hull: np.ndarray,
                   length: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every row's upgrades along its hull (step j: hull[j-1] -> hull[j]), in the order they are bought: highest
    efficiency (expected quality per extra dollar) first, ties by row, then step. Returns row, step j and extra cost
    per step, in that order, without the steps that could never be bought: a step placed before the step it
    follows (rounding can make two of a row's efficiencies cross) finds its row not yet there when its turn comes,
    and so do the row's later steps."""
    n, n_tiers = costs.shape
    row, step = np.nonzero(np.arange(1, n_tiers)[None, :] < length[:, None])
    step = step + 1
    frm, to = hull[row, step - 1], hull[row, step]
    dc = costs[row, to] - costs[row, frm]
    dq = quality[row, to] - quality[row, frm]
    with np.errstate(divide="ignore", invalid="ignore"):
        eff = np.where(dc <= 0, np.inf, dq / np.where(dc <= 0, 1.0, dc))
    order = np.lexsort((step, row, -eff))
    row, step, dc = row[order], step[order], dc[order]
    if n_tiers > 2:
        # position of each row's step j in the buying order (-1: none); keep step j only if it comes after j-1
        pos = np.full((n, n_tiers), -1, dtype=np.int64)
        pos[row, step] = np.arange(len(row))
        ok = np.ones((n, n_tiers), dtype=bool)
        for j in range(2, n_tiers):
            ok[:, j] = ok[:, j - 1] & (pos[:, j] > pos[:, j - 1])
        keep = ok[row, step]
        row, step, dc = row[keep], step[keep], dc[keep]
    return row, step, dc


def _buy_upgrades(row: np.ndarray, dc: np.ndarray, spent: float, limit: float, n: int, rounds: int = 64) -> np.ndarray:
    """Which upgrades the greedy buys (a mask over the buying order): walking the steps in order, a step is bought
    if its row reached the step before it and `spent + dc <= limit`; one that does not fit leaves its row where it
    is (its later steps are never bought), and cheaper steps after it are still tried.

    Done in rounds instead of one step at a time: the running total over the steps still in play is a cumulative
    sum (the same additions in the same order as a loop, so the same floats), bought up to the first step that does
    not fit. Spending only grows, so after that miss every step that does not fit now never will: they are dropped
    with their rows' later steps, and the next round runs on what is left: only steps that still fit in the money
    left. Past `rounds` rounds (an adversarial order of steps) the rest is walked one step at a time."""
    bought = np.zeros(len(row), dtype=bool)
    live = np.arange(len(row))
    for _ in range(rounds):
        if live.size == 0:
            return bought
        total = np.cumsum(np.concatenate(([spent], dc[live])))[1:]
        k = int(np.searchsorted(total > limit, True))  # spending never falls: `total` is non-decreasing
        bought[live[:k]] = True
        if k == live.size:
            return bought
        if k:
            spent = float(total[k - 1])
        rest = live[k:]  # rest[0] is the miss
        miss = (spent + dc[rest]) > limit
        stop = np.full(n, len(row), dtype=np.int64)  # each row's first step not bought: its later ones never are
        np.minimum.at(stop, row[rest[miss]], rest[miss])
        live = rest[~miss & (rest < stop[row[rest]])]
    stopped: set[int] = set()
    for p in live.tolist():
        r = int(row[p])
        if r in stopped:
            continue
        if spent + dc[p] <= limit:
            bought[p] = True
            spent += dc[p]
        else:
            stopped.add(r)
    return bought


def route_by_budget(costs: np.ndarray, quality: np.ndarray, budget_usd: float,
                    first: np.ndarray | None = None) -> BudgetPlan:
    """Tier per row maximising total expected quality within `budget_usd` (greedy, module docstring). `first`:
    rows kept before any other when the budget cannot cover every row (rows an earlier run deferred).

    Array operations throughout (a few arrays of 8 bytes per row and per upgrade step), so a million-row plan
    costs tens of megabytes and a second or two, not per-row Python objects."""
    costs = np.asarray(costs, dtype=np.float64)
    quality = np.asarray(quality, dtype=np.float64)
    n, n_tiers = costs.shape
    if budget_usd < 0 or not math.isfinite(budget_usd):
        raise ValueError(f"budget must be a non-negative number of dollars, got {budget_usd}")
    tier = np.full(n, -1, dtype=np.int64)
    rows = np.arange(n)
    hull, length = _hulls(costs, quality)
    # each row's cheapest option (tier 0 in a cheapest-first catalogue; the better of equally cheap ones)
    base = hull[:, 0]
    base_cost = costs[rows, base]
    floor = float(base_cost.sum())
    if floor > budget_usd:
        # keep as many rows as the budget covers: `first` rows, then the cheapest rows, ties by position
        order = np.lexsort((rows, base_cost, np.zeros(n) if first is None else ~np.asarray(first, bool)))
        fits = np.cumsum(base_cost[order]) <= budget_usd
        kept = order[fits]
        tier[kept] = base[kept]
        cost = np.where(tier >= 0, base_cost, 0.0)
        msg = (f"budget ${budget_usd:.6g} cannot cover the cheapest tier for all {n} rows (needs ${floor:.6g}): "
               f"{len(kept)} rows routed, {n - len(kept)} deferred")
        return BudgetPlan(tier, cost, budget_usd, msg)
    row, step, dc = _upgrade_steps(costs, quality, hull, length)
    bought = _buy_upgrades(row, dc, floor, budget_usd + 1e-15, n)
    reached = np.zeros(n, dtype=np.int64)  # how far along its hull each row got (its bought steps are a prefix)
    np.maximum.at(reached, row[bought], step[bought])
    tier[:] = hull[rows, reached]
    cost = costs[rows, tier]
    upgraded = int((tier != base).sum())
    msg = f"budget ${budget_usd:.6g}: planned ${float(cost.sum()):.6g}, {upgraded} of {n} rows above the cheapest tier"
    return BudgetPlan(tier, cost, budget_usd, msg)
