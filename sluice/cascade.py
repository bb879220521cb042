"""Batch cascade: after the cheap tier has answered the whole batch, escalate its least trustworthy answers.

FrugalGPT runs a cascade per query; a batch can do better, because it sees every answer's confidence before it
spends anything more: rows are escalated in order of expected gain per dollar, (1 - confidence) / cost of the next
tier, until the remaining budget is spent. Like `sluice.budget.route_by_budget`, an escalation that does not fit is
skipped and cheaper ones after it are still tried, so the remaining budget is never exceeded.

Confidence is whatever the cheap tier can say about its own answer, in [0, 1]. The vLLM backend can return token
logprobs: `confidence_from_logprobs` turns a row's mean token logprob into exp(mean), the geometric-mean
probability of the tokens it generated (a long answer is not penalised for its length).
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl


def confidence_from_logprobs(mean_logprob: pl.Expr | float) -> pl.Expr | float:
    """exp(mean token logprob): 1 for a fully certain answer, towards 0 as the model guessed."""
    if isinstance(mean_logprob, pl.Expr):
        return mean_logprob.clip(upper_bound=0.0).exp()
    return math.exp(min(mean_logprob, 0.0))


def escalate_within_budget(
    answers: pl.DataFrame,
    remaining_budget_usd: float,
    confidence: str = "confidence",
    next_cost: str = "next_cost_usd",
    min_confidence: float = 1.0,
) -> pl.DataFrame:
    """Add `escalate` (bool) and `cascade_reason` to a table of cheap-tier answers.

    `confidence`: the cheap answer's confidence in [0, 1] (null: unknown, treated as 0, escalated first);
    `next_cost`: the planned USD cost of answering the row again on the next tier. Only rows with confidence below
    `min_confidence` are candidates (1.0: any row may be escalated while money remains)."""
    if remaining_budget_usd < 0 or not math.isfinite(remaining_budget_usd):
        raise ValueError(f"remaining budget must be a non-negative number, got {remaining_budget_usd}")
    conf = answers[confidence].cast(pl.Float64).fill_null(0.0).clip(0.0, 1.0).to_numpy()
    cost = answers[next_cost].cast(pl.Float64).to_numpy()
    if np.any(np.isnan(cost)) or np.any(cost < 0):
        raise ValueError(f"`{next_cost}` must be a non-negative cost for every row")
    gain = 1.0 - conf
    with np.errstate(divide="ignore", invalid="ignore"):
        per_dollar = np.where(cost > 0, gain / cost, np.inf)
    candidate = conf < min_confidence
    order = np.lexsort((np.arange(len(conf)), -per_dollar))
    escalate = np.zeros(len(conf), dtype=bool)
    reason = np.array(["" for _ in range(len(conf))], dtype=object)
    spent = 0.0
    for i in order:
        if not candidate[i]:
            reason[i] = f"kept: confidence {conf[i]:.2f} >= {min_confidence:.2f}"
        elif gain[i] <= 0:
            reason[i] = "kept: confidence 1.00, nothing to gain"
        elif spent + cost[i] <= remaining_budget_usd + 1e-15:
            escalate[i] = True
            spent += cost[i]
            reason[i] = f"escalated: confidence {conf[i]:.2f}, ${cost[i]:.6f}, cumulative ${spent:.6f}"
        else:
            reason[i] = f"kept: escalation (${cost[i]:.6f}) does not fit the remaining budget"
    return answers.with_columns(pl.Series("escalate", escalate), pl.Series("cascade_reason", reason.tolist(),
                                                                           dtype=pl.String))
