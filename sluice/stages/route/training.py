"""What every router kind's training shares: the labels, the folds, the score they are cross-validated on, and
the saved folder's format version.

Labels are a table with `prompt` and one `<tier>_ok` column per tier, cheapest first: whether that tier's answer
was good enough. Today's two-tier labels are `cheap_ok` and `premium_ok` (`premium_ok` optional: unknown counts
as right, premium being the reference). Each router kind reads what it needs:

    premium_needed   the logistic router's target: not cheap_ok (and premium_ok, when known)
    outcomes         the per-tier table: (tiers, (rows, tiers) array of 1.0 / 0.0 / NaN for unknown)
    routing_gain     premium_ok - cheap_ok per row (+1: only premium right, -1: only cheap right): what a row
                     gains by going to premium, which the kNN router averages over neighbours

Every kind is judged by the same out-of-fold number, APGR (RouteLLM's area under the performance gap recovered):
rank the rows by score, send the top share f to premium, and take the accuracy acc(f) (premium_ok on the rows
sent, cheap_ok on the rest); APGR is the mean over f in [0, 1] of (acc(f) - acc(0)) / (acc(1) - acc(0)). Random
scores give 0.5. Tied scores are counted as if broken at random (the curve is linear across a tie), so a kNN
router's coarse scores are neither flattered nor penalised by row order.
"""

from __future__ import annotations

import numpy as np
import polars as pl

FORMAT_VERSION = 2  # of a saved router folder (router.json + weights.npz), whatever its kind
FOLDS = 5
SEED = 20260124


class RouterError(ValueError):
    """Labels or a saved router that cannot be used."""


def require(labels: pl.DataFrame, *columns: str) -> None:
    for col in columns:
        if col not in labels.columns:
            raise RouterError(f"labels need a `{col}` column (have: {', '.join(labels.columns)})")


def premium_needed(labels: pl.DataFrame) -> tuple[np.ndarray, str]:
    """The logistic router's training target and its description: "premium is needed" is `not cheap_ok`, and
    when `premium_ok` is known, `not cheap_ok and premium_ok` (a row both tiers get wrong is not worth escalating:
    paying premium for it buys nothing)."""
    require(labels, "prompt", "cheap_ok")
    cheap_ok = labels["cheap_ok"].cast(pl.Boolean)
    if cheap_ok.null_count():
        raise RouterError(f"`cheap_ok` has {cheap_ok.null_count()} null values")
    y = ~cheap_ok.to_numpy()
    target = "not cheap_ok"
    if "premium_ok" in labels.columns and labels["premium_ok"].null_count() < labels.height:
        premium_ok = labels["premium_ok"].cast(pl.Boolean).fill_null(True).to_numpy()
        y = y & premium_ok
        target = "not cheap_ok and premium_ok"
    return y.astype(np.float64), target


def tier_columns(labels: pl.DataFrame, tiers: list[str] | None = None) -> list[str]:
    """The tiers the labels describe, cheapest first: `tiers` as given, else every `<tier>_ok` column in order."""
    names = tiers if tiers is not None else [c[: -len("_ok")] for c in labels.columns if c.endswith("_ok")]
    require(labels, "prompt", *[f"{t}_ok" for t in names])
    if len(names) < 2:
        raise RouterError(f"per-tier labels need two or more `<tier>_ok` columns (have: {', '.join(labels.columns)})")
    return names


def outcomes(labels: pl.DataFrame, tiers: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """(tier names, (rows, tiers) float array: 1.0 right, 0.0 wrong, NaN unknown)."""
    names = tier_columns(labels, tiers)
    cols = [labels[f"{t}_ok"].cast(pl.Float64).to_numpy() for t in names]
    return names, np.column_stack(cols).astype(np.float64)


def two_tier_outcomes(labels: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(cheap_ok, premium_ok) as booleans, premium_ok unknown or absent counting as right (as `premium_needed`)."""
    require(labels, "prompt", "cheap_ok")
    cheap = labels["cheap_ok"].cast(pl.Boolean)
    if cheap.null_count():
        raise RouterError(f"`cheap_ok` has {cheap.null_count()} null values")
    premium = (labels["premium_ok"].cast(pl.Boolean).fill_null(True).to_numpy() if "premium_ok" in labels.columns
               else np.ones(labels.height, bool))
    return cheap.to_numpy().astype(bool), premium.astype(bool)


def routing_gain(labels: pl.DataFrame) -> np.ndarray:
    cheap, premium = two_tier_outcomes(labels)
    return premium.astype(np.float64) - cheap.astype(np.float64)


def folds(n: int, k: int = FOLDS, seed: int = SEED) -> np.ndarray:
    """Fold number per row: a seeded permutation, so every candidate is scored on the same folds."""
    return np.random.default_rng(seed).permutation(n) % k


def apgr(scores: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray) -> float:
    """Area under the performance-gap-recovered curve (module docstring), ties broken at random in expectation."""
    n = len(scores)
    a_cheap, a_premium = float(np.mean(cheap_ok)), float(np.mean(premium_ok))
    if n == 0 or a_premium - a_cheap <= 1e-12:
        return 0.5  # nothing to recover: no ranking helps
    gain = premium_ok.astype(np.float64) - cheap_ok.astype(np.float64)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    s, g = np.asarray(scores)[order], gain[order]
    ends = np.r_[np.nonzero(np.diff(s))[0] + 1, n]  # where each group of tied scores ends
    sent = np.r_[0, ends]
    acc = (cheap_ok.sum() + np.r_[0.0, np.cumsum(g)[ends - 1]]) / n
    area = float(np.sum((acc[1:] + acc[:-1]) / 2 * np.diff(sent)) / n)  # trapezoid: linear across a tie
    return (area - a_cheap) / (a_premium - a_cheap)
