"""Which rows a pass may send within what the budget has left, and what happens to the rest.

First answers (`admit_first_answers`, once, right after routing): every routed row's reservation on its tier is
held against the budget: rows an earlier run deferred first, then the cheapest tier's rows, in batch order. When a row's tier would cross the cap, the
row goes to the cheapest tier that still fits (`route_reason` says so); a row that fits on no tier is `deferred`
with the reason (`error`), never dropped: the next run of the dataset picks it up first
(`sluice.stages.budget.carry`). A duplicate whose canonical row is deferred is deferred with it. Each tier's
first answers are then one reservation, keyed by the tier's name.

Follow-up passes (`admit_pass`: escalations, the shadow sample, schema retries): rows are taken in the order the
review wrote them while they fit; a row that does not fit is left out (it keeps the answer it has) and later,
cheaper rows are still tried, as `route_by_budget` does. The judge is all or nothing (`admit_judge`).
"""

from __future__ import annotations

import numpy as np
import polars as pl

from sluice.contracts.columns import DEFERRED
from sluice.stages.budget.costs import TierRate, judge_usd, pass_fixed_usd, rate_of, row_costs
from sluice.stages.budget.ledger import Ledger


def admit_first_answers(routed: pl.DataFrame, tiers: list[str], ledger: Ledger,
                        default_max_tokens: int) -> pl.DataFrame:
    """`routed` with tiers moved and rows deferred as the budget requires; reserves each tier's first answers."""
    rates = [rate_of(ledger.model, t) for t in tiers]
    pending = ((routed["status"] == "pending") & routed["tier"].is_not_null()).fill_null(False).to_numpy()
    idx = np.nonzero(pending)[0]
    sub = routed[idx.tolist()]
    costs = np.column_stack([row_costs(sub, r, default_max_tokens) for r in rates]) if len(idx) else \
        np.zeros((0, len(tiers)))
    fixed = [pass_fixed_usd(r) for r in rates]
    routed_tier = np.array([tiers.index(t) for t in sub["tier"].to_list()], dtype=np.int64)
    left = ledger.available_usd
    opened: set[int] = set()
    reserve = [0.0] * len(tiers)
    rows = [0] * len(tiers)
    chosen = np.full(len(idx), -1, dtype=np.int64)
    need = np.zeros(len(idx))
    tonight = (sub["deferred_from"].is_null().to_numpy() if "deferred_from" in sub.columns
               else np.ones(len(idx), dtype=bool))
    # rows an earlier run deferred first, then the cheapest tier's rows, then batch order
    for i in np.lexsort((np.arange(len(idx)), routed_tier, tonight)):
        home = int(routed_tier[i])
        # the routed tier, else the cheapest that fits (one engine start more when its engine is not yet paid)
        tries = [home] + sorted((k for k in range(len(tiers)) if k != home), key=lambda k: (costs[i, k], k))
        for k in tries:
            c = costs[i, k] + (0.0 if k in opened else fixed[k])
            if c <= left + 1e-15:
                chosen[i], left = k, left - c
                reserve[k] += c
                rows[k] += 1
                opened.add(k)
                break
        else:
            need[i] = min(costs[i, k] + (0.0 if k in opened else fixed[k]) for k in range(len(tiers)))
    for k, name in enumerate(tiers):
        if rows[k]:
            ledger.reserve(name, reserve[k], rows[k])
    moved = (chosen >= 0) & (chosen != routed_tier)
    deferred = chosen < 0
    if moved.any():
        ledger.note("moved", int(moved.sum()))
    names = [tiers[k] if k >= 0 else None for k in chosen]
    cap = f"the run's budget of ${ledger.budget_usd:.6g}"
    notes = [
        None if not m and not d else
        f"; budget: {tiers[h]} would cross {cap}, moved to {names[j]}" if m else
        f"; budget: deferred: fits on no tier within {cap} (needs ${need[j]:.6g}, ${left:.6g} left)"
        for j, (h, m, d) in enumerate(zip(routed_tier, moved, deferred))]
    full = lambda values, dtype: pl.Series([None] * routed.height, dtype=dtype).scatter(  # noqa: E731
        idx, pl.Series(values, dtype=dtype)) if len(idx) else pl.Series([None] * routed.height, dtype=dtype)
    out = routed.with_columns(_note=full(notes, pl.String), _tier=full(names, pl.String))
    is_deferred = pl.col("_note").str.contains("deferred", literal=True).fill_null(False)
    out = out.with_columns(
        pl.when(pl.col("_note").is_not_null()).then(pl.col("_tier")).otherwise(pl.col("tier")).alias("tier"),
        pl.when(pl.col("_note").is_not_null()).then(pl.col("route_reason") + pl.col("_note"))
        .otherwise(pl.col("route_reason")).alias("route_reason"),
        pl.when(is_deferred).then(pl.lit(DEFERRED)).otherwise(pl.col("status")).alias("status"),
        pl.when(is_deferred).then(pl.col("_note").str.strip_prefix("; budget: ")
                                  + "; the next run of the dataset answers it first")
        .otherwise(pl.col("error")).alias("error"),
    ).drop("_note", "_tier")
    out = defer_duplicates(out)
    n = int((out["status"] == DEFERRED).sum())
    if n:
        ledger.note("deferred", n - ledger.notes.get("deferred", 0))
    return out


def defer_duplicates(rows: pl.DataFrame) -> pl.DataFrame:
    """A duplicate of a deferred row is deferred with it (its answer will only exist after the next run)."""
    if "dup_of" not in rows.columns:
        return rows
    gone = rows.filter(pl.col("status") == DEFERRED)["row_id"]
    hit = (pl.col("status") == "duplicate") & pl.col("dup_of").is_in(gone.implode())
    return rows.with_columns(
        pl.when(hit).then(pl.lit(DEFERRED)).otherwise(pl.col("status")).alias("status"),
        pl.when(hit).then(pl.format("deferred with its canonical row {}", pl.col("dup_of")))
        .otherwise(pl.col("error")).alias("error"),
    )


def admit_pass(rows: pl.DataFrame, key: str, ledger: Ledger, default_max_tokens: int) -> tuple[np.ndarray, float]:
    """Which rows of the follow-up pass `key` ("<tier>/<kind>") fit in what is available, and their reservation
    (with the engine's start when the tier's engine has not run in this run). Reserves nothing: the caller
    writes the admitted partition first, then reserves (a resumed run finds the same rows fit)."""
    tier = key.split("/")[0]
    rate = rate_of(ledger.model, tier)
    costs = row_costs(rows, rate, default_max_tokens)
    start = 0.0 if tier in ledger.entries else pass_fixed_usd(rate)  # its first answers started the engine
    left = ledger.available_usd - start
    take = np.zeros(rows.height, dtype=bool)
    for i, c in enumerate(costs):
        if c <= left + 1e-15:
            take[i], left = True, left - c
    return take, (float(costs[take].sum()) + start if take.any() else 0.0)


def admit_judge(key: str, rate: TierRate, pair_input_tokens: np.ndarray, max_tokens: int, ledger: Ledger) -> bool:
    """Reserve the judge's requests (every free-text pair, both orders); False when they do not fit."""
    if not len(pair_input_tokens):
        return True
    ok = ledger.reserve(key, judge_usd(rate, pair_input_tokens, max_tokens), 2 * len(pair_input_tokens))
    if not ok:
        ledger.note("skipped", len(pair_input_tokens), key)
    return ok
