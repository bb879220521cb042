"""Batch cascade: after the cheap tier has answered the whole batch, escalate its least trustworthy answers.

FrugalGPT runs a cascade per query; a batch can do better, because it sees every answer's confidence before it
spends anything more: rows are escalated in order of expected gain per dollar, (1 - confidence) / cost of the next
tier, until the remaining budget is spent. Like `sluice.stages.route.policies.route_by_budget`, an escalation that does not fit is
skipped and cheaper ones after it are still tried, so the remaining budget is never exceeded.

Confidence is whatever the cheap tier can say about its own answer, in [0, 1]. The vLLM backend can return token
logprobs: `confidence_from_logprobs` turns a row's mean token logprob into exp(mean), the geometric-mean
probability of the tokens it generated (a long answer is not penalised for its length).

When no logprobs are available (an API tier, or stored answers), `answer_signals` reads cheap checks off the answer
text itself, for a learned scorer (FrugalGPT's idea): inline calculations that do not check out (`<<48/2=24>>`,
`48 / 2 = 25`), no final answer, a fractional or negative final answer, a final answer that is not the last
calculated value, hedging words. `bench/routing_quality.py` measures such a scorer on GSM8K.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from typing import Sequence

import numpy as np
import polars as pl

from models.pricing import TierPrice, cost_usd


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


ANSWER_SIGNALS = ["calculations", "wrong_calculations", "has_final_answer", "fractional_final", "final_not_last_calc",
                  "negative_or_missing_final", "hedges", "log_chars", "lines"]
_CALC = re.compile(r"<<([^=<>]+)=([^<>]+)>>|(?<![\w.])(\d[\d.,]*(?:\s*[-+*/x×]\s*\d[\d.,]*)+)\s*=\s*\$?(-?\d[\d,]*\.?\d*)")
_FINAL = re.compile(r"(?:####|answer is:?|answer:)\s*\$?\s*(-?\d[\d,]*\.?\d*)", re.IGNORECASE)
_HEDGE = re.compile(r"\b(however|but since|assum\w*|approximately|round(?:ed|ing)?|cannot|can't|not possible|actually|"
                    r"wait|mistake|incorrect|unclear)\b", re.IGNORECASE)
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _number(text: str) -> float | None:
    try:
        return float(text.replace(",", "").rstrip("."))
    except ValueError:
        return None


def _arithmetic(expr: str) -> float | None:
    """Value of a plain arithmetic expression (numbers, + - * / ^, parentheses); None if it is anything else."""
    expr = expr.replace(",", "").replace("x", "*").replace("×", "*").replace("^", "**").replace("$", "")
    try:
        tree = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return None

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 16:
                raise ValueError("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.operand))
        raise ValueError("not arithmetic")

    try:
        return ev(tree)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def answer_signals(responses: Sequence[str | None]) -> np.ndarray:
    """(n, len(ANSWER_SIGNALS)) checks read off each answer's text (module docstring)."""
    rows = []
    for text in responses:
        text = text or ""
        calcs = wrong = 0
        last = None
        for m in _CALC.finditer(text):
            lhs, rhs = (m.group(1), m.group(2)) if m.group(1) is not None else (m.group(3), m.group(4))
            value, stated = _arithmetic(lhs), _number(rhs)
            calcs += 1
            if value is None or stated is None or abs(value - stated) > 1e-6 * max(1.0, abs(value)) + 0.011:
                wrong += 1
            last = stated
        finals = _FINAL.findall(text)
        final = _number(finals[-1]) if finals else None
        rows.append([
            calcs, wrong, final is not None,
            final is not None and abs(final - round(final)) > 1e-9,
            final is not None and last is not None and abs(final - last) > 1e-6,
            final is None or final < 0,
            len(_HEDGE.findall(text)), math.log1p(len(text)), text.count("\n"),
        ])
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(ANSWER_SIGNALS))


def escalation_costs(answers: pl.DataFrame, input_usd_per_token: float, output_usd_per_token: float,
                     max_tokens: str = "max_tokens") -> pl.Series:
    """Planned USD cost of answering each row again on the next tier: its measured input tokens at that tier's
    price, and its output cap (`max_tokens`, else the cheap answer's own length) at that tier's output price.
    Tier prices come from `models.pricing.tier_prices`."""
    out_tokens = pl.col("output_tokens")
    if max_tokens in answers.columns:
        out_tokens = pl.col(max_tokens).fill_null(pl.col("output_tokens"))
    price = TierPrice("next", input_usd_per_token, output_usd_per_token, "escalation plan")
    return answers.select(
        cost_usd(price, pl.col("input_tokens"), out_tokens).cast(pl.Float64).alias("next_cost_usd")
    ).to_series()
