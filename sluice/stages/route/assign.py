"""Route: a fast gatekeeper scores each prompt's complexity and intent and assigns it a tier.

The heuristic gatekeeper reads cheap signals from the text (vectorised regexes in polars, microseconds a row):
    - intent: code, math, reasoning, analysis, writing, extraction, classification, chit-chat, qa
    - length in words
    - explicit demands for rigour ("step by step", "prove", "show the working", "trade-offs")
and combines them into a score in [0, 1], an estimate of how likely the cheap tiers are to fall short.
The score picks the tier by the thresholds in `RouterSettings`: the cheapest tier below `small_below`, the
premium (last) tier from `premium_from`, the middle tier(s) in between.

With a learned router, a premium share or a dollar budget (`RouterSettings`), `route_batch` scores the rows with
the router (`sluice.stages.route.learned`; the heuristic score when none is given) and assigns tiers for the whole batch at once
(`sluice.stages.route.policies`): the share calibrated on the batch's own scores, or the budget spent where expected quality per
dollar is highest. Rows the budget cannot cover keep a reason and land as `deferred`; none is dropped (the next
run of the dataset answers them first: sluice.stages.budget).

Only rows still pending after dedup are routed; the routed rows are written as one Parquet partition per tier
(`<run_dir>/routed/tier=<name>/part-0.parquet`): the hand-off the infer stage and remote workers read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import pyarrow as pa

import sluice.stages.route.policies as bud
from models.pricing import tier_prices
from sluice.config import RouterSettings
from sluice.contracts.columns import DEFAULT_MAX_TOKENS, DEFERRED
from sluice.contracts.shapes import conversation_texts
from sluice.runs import write_parquet
from sluice.stages.route.gatekeeper import gatekeeper_features
from sluice.stages.route.learned import LearnedRouter
from sluice.stages.route.scorers import Scorer, scorer_for

if TYPE_CHECKING:
    from models.catalogue import Catalogue

def heuristic_route(rows: pa.Table, tiers: list[str], settings: RouterSettings) -> pa.Table:
    """Add `tier`, `route_score`, `route_reason` to pending rows (other rows keep nulls)."""
    if len(tiers) < 2:
        raise ValueError("routing needs at least two tiers")
    df = pl.from_arrow(rows)
    assert isinstance(df, pl.DataFrame)
    feats = gatekeeper_features(df["prompt"])
    middle = tiers[1:-1] or [tiers[0]]
    span = max(settings.premium_from - settings.small_below, 1e-9)
    # the middle band is split evenly between the middle tiers
    mid_index = ((pl.col("route_score") - settings.small_below) / span * len(middle)).floor().cast(pl.Int64)
    mid_index = mid_index.clip(0, len(middle) - 1)
    tier = (
        pl.when(pl.col("route_score") < settings.small_below)
        .then(pl.lit(tiers[0]))
        .when(pl.col("route_score") >= settings.premium_from)
        .then(pl.lit(tiers[-1]))
        .otherwise(pl.lit(pl.Series(middle)).get(mid_index))
    )
    routed = pl.concat([df, feats], how="horizontal").with_columns(tier.alias("_tier"))
    reason = pl.format(
        "heuristic: intent={} words={} numbers={}{} score={} -> {}",
        pl.col("intent"),
        pl.col("words"),
        pl.col("numbers"),
        pl.when(pl.col("rigour")).then(pl.lit(" rigour")).otherwise(pl.lit("")),
        pl.col("route_score").round(2),
        pl.col("_tier"),
    )
    # a plain prompt file (`sluice route`) has no `status`: every row is pending
    pending = pl.col("status") == "pending" if "status" in df.columns else pl.lit(True)
    out = routed.with_columns(
        pl.when(pending).then(pl.col("_tier")).alias("tier"),
        pl.when(pending).then(pl.col("route_score")).alias("route_score"),
        pl.when(pending).then(reason).alias("route_reason"),
    ).drop("_tier", "words", "numbers", "rigour", "intent")
    return out.to_arrow()


# a row the budget plan cannot cover at all: landed unanswered with the reason, answered first by the next run
OVER_BUDGET = DEFERRED


def route_batch(
    rows: pa.Table,
    tiers: list[str],
    settings: RouterSettings,
    catalogue: "Catalogue | None" = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    router: "Scorer | LearnedRouter | None" = None,
) -> pa.Table:
    """Route a batch as `settings` asks: today's heuristic thresholds unless a router model, a premium share or a
    budget is given (then `learned_route`)."""
    if router is None and settings.model is None and settings.premium_share is None and settings.budget_usd is None:
        return heuristic_route(rows, tiers, settings)
    if router is None and settings.model is not None:
        from sluice.stages.route.learned import load_router

        router = load_router(settings.model)
    return learned_route(rows, tiers, settings, router, catalogue, default_max_tokens)


def learned_route(
    rows: pa.Table,
    tiers: list[str],
    settings: RouterSettings,
    router: "Scorer | LearnedRouter | None" = None,
    catalogue: "Catalogue | None" = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
) -> pa.Table:
    """Add `tier`, `route_score`, `route_reason` for the whole batch (pending rows when there is a `status`).

    `route_score` is the router's probability that the premium tier is needed (the heuristic complexity score
    when `router` is None). Tiers come from `settings`: budget, share, or the score thresholds. In budget mode the
    rows the budget cannot cover get no tier, and (when the table has `status`) status `deferred` + `error`.

    Three steps, which `sluice.stages.route.stream` runs over a file in record batches: score the pending rows
    (`score_pending`), assign tiers over all their scores (`assign_tiers`), then write tiers and reasons back
    (`finish_routed`)."""

    if len(tiers) < 2:
        raise ValueError("routing needs at least two tiers")
    df = pl.from_arrow(rows)
    assert isinstance(df, pl.DataFrame)
    scorer = scorer_for(router)
    idx, sub, scores, why = score_pending(df, scorer)
    costs, carried = (budget_inputs(sub, tiers, settings, catalogue, default_max_tokens)
                      if settings.budget_usd is not None else (None, None))
    plan = assign_tiers(scores, len(tiers), settings, costs, carried)
    return finish_routed(df, idx, scores, why, plan, scorer, tiers, settings)


def pending_rows(df: pl.DataFrame) -> np.ndarray:
    """Positions of the rows to route: those with status `pending`, every row when there is no `status`."""
    if "status" not in df.columns:
        return np.arange(df.height)
    return np.nonzero((df["status"] == "pending").fill_null(False).to_numpy())[0]


def score_pending(df: pl.DataFrame, scorer: Scorer) -> tuple[np.ndarray, pl.DataFrame, np.ndarray, list[str]]:
    """The pending rows' positions, the rows themselves, their scores and the scorer's reasons."""
    idx = pending_rows(df)
    sub = df[idx.tolist()] if len(idx) < df.height else df
    scores, why = scorer.score(sub["prompt"].cast(pl.String))
    return idx, sub, scores, why


def budget_inputs(sub: pl.DataFrame, tiers: list[str], settings: RouterSettings, catalogue: "Catalogue | None",
                  default_max_tokens: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(rows, tiers) planned cost of each pending row on each tier, and the rows an earlier run deferred."""
    if catalogue is None:
        raise ValueError("routing to a budget needs the catalogue (tier prices)")
    prices = tier_prices(_ordered_catalogue(catalogue, tiers), settings.self_hosted_tokens_per_s)
    systems = sub["system"].to_list() if "system" in sub.columns else None
    in_tok = bud.estimate_input_tokens(conversation_texts(sub), systems)  # earlier chat turns are sent too
    out_tok = (sub["max_tokens"].cast(pl.Float64).fill_null(default_max_tokens).to_numpy()
               if "max_tokens" in sub.columns else np.full(sub.height, float(default_max_tokens)))
    carried = sub["deferred_from"].is_not_null().to_numpy() if "deferred_from" in sub.columns else None
    return bud.row_tier_costs(in_tok, out_tok, prices), carried


@dataclass
class TierPlan:
    """Tier index per scored row (-1: the budget cannot cover it), the mode for `route_reason`, and in budget
    mode each row's planned cost and the plan's message."""

    tier: np.ndarray
    mode: str
    cost: np.ndarray | None = None
    message: str = ""

    def notes(self, lo: int = 0, hi: int | None = None) -> list[str]:
        """The per-row note of rows lo:hi in `route_reason` (empty outside budget mode)."""
        tier = self.tier[lo:hi]
        if self.cost is None:
            return ["" for _ in range(len(tier))]
        return [f"planned ${c:.6f}" if t >= 0 else f"{OVER_BUDGET}: {self.message}"
                for t, c in zip(tier, self.cost[lo:hi])]


def assign_tiers(scores: np.ndarray, n_tiers: int, settings: RouterSettings, costs: np.ndarray | None = None,
                 carried: np.ndarray | None = None) -> TierPlan:
    """Tiers for all scored rows at once: budget (`costs` needed), share, or the score thresholds."""
    if settings.budget_usd is not None:
        assert costs is not None
        plan = bud.route_by_budget(costs, bud.expected_quality(scores, n_tiers, settings.mid_recovery),
                                   settings.budget_usd, first=carried)  # deferred by an earlier run: kept first
        return TierPlan(plan.tier, f"budget ${settings.budget_usd:g}", plan.cost, plan.message)
    if settings.premium_share is not None:
        tier_idx = bud.route_by_share(scores, settings.premium_share, settings.mid_share, n_tiers)
        threshold = bud.premium_threshold(scores, settings.premium_share)
        return TierPlan(tier_idx, f"share {settings.premium_share:g} (threshold {threshold:.3f})")
    tier_idx = bud.route_by_thresholds(scores, settings.small_below, settings.premium_from, n_tiers)
    return TierPlan(tier_idx, f"thresholds {settings.small_below:g}/{settings.premium_from:g}")


def finish_routed(df: pl.DataFrame, idx: np.ndarray, scores: np.ndarray, why: list[str], plan: TierPlan,
                  scorer: Scorer, tiers: list[str], settings: RouterSettings, lo: int = 0) -> pa.Table:
    """`df` with `tier`, `route_score`, `route_reason` on its pending rows `idx`, whose scores and reasons are
    given; their tiers are rows lo:lo+len(idx) of `plan` (a batch of a larger plan)."""
    n = len(scores)
    names = [tiers[t] if t >= 0 else None for t in plan.tier[lo:lo + n]]
    reasons = [
        f"{scorer.source}: {scorer.label}={s:.2f} [{w}] {plan.mode}{'; ' + k if k else ''} -> {t or 'none'}"
        for s, w, k, t in zip(scores, why, plan.notes(lo, lo + n), names)
    ]
    full = lambda values, dtype: pl.Series(  # noqa: E731  (scatter the routed rows back into the batch)
        [None] * df.height, dtype=dtype).scatter(idx, pl.Series(values, dtype=dtype)) if n else pl.Series(
        [None] * df.height, dtype=dtype)
    out = df.with_columns(
        full(names, pl.String).alias("tier"),
        full(scores.tolist(), pl.Float64).alias("route_score"),
        full(reasons, pl.String).alias("route_reason"),
    )
    if "status" in df.columns and settings.budget_usd is not None:
        unaffordable = full([t is None for t in names], pl.Boolean).fill_null(False)
        out = out.with_columns(
            pl.when(unaffordable).then(pl.lit(OVER_BUDGET)).otherwise(pl.col("status")).alias("status"),
            pl.when(unaffordable).then(pl.col("route_reason")).otherwise(
                pl.col("error") if "error" in df.columns else pl.lit(None, pl.String)).alias("error"),
        )
    return out.to_arrow()


def _ordered_catalogue(catalogue: "Catalogue", tiers: list[str]) -> "Catalogue":
    """The catalogue restricted to `tiers`, in that order (the order routing assigns tier indices in)."""
    return catalogue.model_copy(update={"tiers": [catalogue.tier(t) for t in tiers]})


def write_tier_partitions(routed: pa.Table, out_dir: Path, tiers: list[str]) -> dict[str, Path]:
    """Write each tier's pending rows to `<out_dir>/tier=<name>/part-0.parquet`; returns tier -> file."""
    df = pl.from_arrow(routed)
    assert isinstance(df, pl.DataFrame)
    files: dict[str, Path] = {}
    for name in tiers:
        part = df.filter((pl.col("status") == "pending") & (pl.col("tier") == name))
        if part.height == 0:
            continue
        # atomically: readers never see a half-written partition
        files[name] = write_parquet(part.to_arrow(), out_dir / f"tier={name}" / "part-0.parquet")
    return files
