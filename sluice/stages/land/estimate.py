"""Land: the run's quality estimated without references, from its shadow sample.

Every shadow pair (a cheap tier's answer to a row, and the premium tier's answer to the same row) is judged by
shape (sluice/contracts/agreement.py): numbers, option letters, JSON values under the row's schema. Pairs of free
text are judged by the catalogue's judge tier when there is one (sluice/stages/review/judge.py: asked in both
orders; a split verdict is not acceptable). Unjudged, counted apart and never part of n: free-text pairs without a
judge, pairs the judge's verdict could not be parsed for (`unparseable`) or whose judge requests failed
(`judge_failed`), and pairs without a usable premium answer.

Per tier (`quality_per_tier`):

    shadowed tier  estimate = acceptable / judged pairs, with its 95% Wilson interval and n; it stands for the
                   tier's rows answered ok (the shadow sample is drawn from those, sluice/stages/review/decide.py)
    premium tier   acceptable by definition (estimate 1, no interval, `assumed`): the premium answer is the
                   yardstick the other tiers are judged by, so this is an estimate of "as good as premium", not of
                   correctness; where references exist the premium tier's own accuracy says how good that is
    other tiers    never shadowed: "not estimated"

For the batch: the tiers with an estimate, weighted by the rows each answered; a failed row is never acceptable
(weight counted, estimate 0, like a wrong row in grading). The interval is the same weighted sum of the tiers'
bounds: for one shadowed tier (the usual case: only the cheapest tier is shadowed) that is exactly its Wilson
interval mapped onto the batch; for several it is conservative (wider than needed). No batch estimate without a
judged pair (an all-premium "1" would say nothing). `quality_rows` says how many answered rows it covers.

Where references exist (results.correct), each shadowed tier also reports the measured accuracy of its judged
shadow rows and whether its interval covers it, and the batch the measured accuracy of the rows it covers.
"""

from __future__ import annotations

import polars as pl

from sluice.contracts.agreement import compare_shapes
from sluice.contracts.judging import OUTCOME_VERDICT
from sluice.stats import wilson_interval

NOT_ESTIMATED = "not estimated"


def shadow_verdicts(pairs: pl.DataFrame, results: pl.DataFrame, hints: pl.DataFrame | None = None,
                    judged: pl.DataFrame | None = None) -> pl.DataFrame:
    """One verdict per shadow pair: row_id, tier (the cheap tier), acceptable (True / False / None), shape
    ("judge" for a judge's verdict), reason, judge (the judge's outcome, sluice/contracts/judging.py; None when the
    pair was not put to a judge).

    `pairs`: row_id, response (the cheap answer, parsed where structured), _shadow_response (the premium one), as
    `combine_attempts` returns them; `results`: the assembled rows (tier, status, response_schema, correct);
    `hints`: row_id, grader (the row's grader as given: a shape hint even without a reference); `judged`: row_id,
    outcome, reason of the free-text pairs the judge was asked about. A pair with a shape is compared by it."""
    cols = ["row_id", "tier", "status", "response_schema", "correct"]
    rows = results.select([c if c in results.columns else pl.lit(None).alias(c) for c in cols])
    df = pairs.select("row_id", "response", "_shadow_response").join(rows, on="row_id", how="left")
    if hints is not None and "grader" in hints.columns:
        df = df.join(hints.select("row_id", pl.col("grader").alias("_hint")), on="row_id", how="left")
    else:
        df = df.with_columns(pl.lit(None, pl.String).alias("_hint"))
    if judged is not None and judged.height:
        df = df.join(judged.select("row_id", pl.col("outcome").alias("_outcome"),
                                   pl.col("reason").alias("_judge_reason")), on="row_id", how="left")
    else:
        df = df.with_columns(pl.lit(None, pl.String).alias("_outcome"), pl.lit(None, pl.String).alias("_judge_reason"))
    verdicts = []
    for r in df.iter_rows(named=True):
        if r["status"] != "ok":
            verdicts.append((False, None, "the cheap answer failed", None))
            continue
        v = compare_shapes(r["response"], r["_shadow_response"], r["response_schema"], r["_hint"])
        if v.shape is None and r["_outcome"] is not None:  # free text, put to the judge (same shape rule)
            verdicts.append((OUTCOME_VERDICT[r["_outcome"]], "judge", r["_judge_reason"], r["_outcome"]))
        else:
            verdicts.append((v.acceptable, v.shape, v.reason, None))
    return df.select("row_id", "tier", "correct").with_columns(
        pl.Series("acceptable", [v[0] for v in verdicts], pl.Boolean),
        pl.Series("shape", [v[1] for v in verdicts], pl.String),
        pl.Series("reason", [v[2] for v in verdicts], pl.String),
        pl.Series("judge", [v[3] for v in verdicts], pl.String),
    )


def _inside(value: float | None, low: float | None, high: float | None) -> bool | None:
    if value is None or low is None or high is None:
        return None
    return low - 1e-12 <= value <= high + 1e-12


def _accuracy(correct: pl.Series) -> tuple[float | None, int]:
    graded = correct.drop_nulls()
    return (float(graded.sum()) / graded.len() if graded.len() else None), graded.len()


def _tier_entry(tier: str, rows: int, ok: int, verdicts: pl.DataFrame, premium: str | None) -> dict:
    entry: dict = {"rows": rows, "ok_rows": ok}
    if tier == premium:
        return {**entry, "estimate": 1.0, "low": 1.0, "high": 1.0, "n": 0, "assumed": True}
    mine = verdicts.filter(pl.col("tier") == tier)
    judged = mine.filter(pl.col("acceptable").is_not_null())
    n, k = judged.height, int(judged["acceptable"].sum())
    unjudged = mine.height - n
    entry.update(_judge_counts(mine))
    if n == 0:
        return {**entry, "estimate": None, "n": 0, "unjudged": unjudged, "note": NOT_ESTIMATED}
    low, high = wilson_interval(k, n)
    entry.update(estimate=k / n, low=low, high=high, n=n, acceptable=k, unjudged=unjudged)
    accuracy, graded = _accuracy(judged["correct"])
    if graded:  # the measured accuracy of the same judged shadow rows, against their references
        entry.update(shadow_accuracy=accuracy, shadow_graded=graded,
                     covers_shadow_accuracy=_inside(accuracy, low, high))
    return entry


def _judge_counts(verdicts: pl.DataFrame) -> dict:
    """What the judge made of these pairs (nothing when none was put to it): pairs judged by it, of which split;
    pairs it left unjudged, apart: unparseable verdicts, failed requests."""
    outcomes = verdicts["judge"].drop_nulls()
    if outcomes.len() == 0:
        return {}
    count = {o: int((outcomes == o).sum()) for o in ("split", "unparseable", "failed")}
    return {"judged_by_judge": int(outcomes.len()) - count["unparseable"] - count["failed"], "split": count["split"],
            "unparseable": count["unparseable"], "judge_failed": count["failed"]}


def estimate_quality(pairs: pl.DataFrame | None, results: pl.DataFrame, premium: str | None,
                     hints: pl.DataFrame | None = None, judged: pl.DataFrame | None = None) -> dict:
    """The run's quality estimate (module docstring): quality_estimate, quality_low, quality_high, quality_n,
    quality_unjudged (of which quality_unparseable and quality_judge_failed: the judge's), quality_rows,
    quality_answered_rows, quality_per_tier, and with references quality_accuracy and quality_covers_accuracy.
    The estimate and its bounds are None when no pair was judged. `judged`: the judge's outcomes for free-text
    pairs (sluice/contracts/judging.py), when the catalogue has a judge."""
    answered = results.filter(pl.col("tier").is_not_null())
    counts = answered.group_by("tier").agg(pl.len().alias("rows"), (pl.col("status") == "ok").sum().alias("ok"))
    counts = {r["tier"]: r for r in counts.to_dicts()}
    if pairs is not None and pairs.height:
        verdicts = shadow_verdicts(pairs, results, hints, judged)
    else:
        verdicts = pl.DataFrame(schema={"row_id": pl.String, "tier": pl.String, "correct": pl.Boolean,
                                        "acceptable": pl.Boolean, "shape": pl.String, "reason": pl.String,
                                        "judge": pl.String})
    per_tier = {t: _tier_entry(t, int(c["rows"]), int(c["ok"]), verdicts, premium) for t, c in sorted(counts.items())}
    n = sum(e["n"] for e in per_tier.values())
    out: dict = {
        "quality_estimate": None, "quality_low": None, "quality_high": None, "quality_n": n,
        "quality_unjudged": int(verdicts["acceptable"].null_count()),
        "quality_unparseable": int((verdicts["judge"] == "unparseable").sum()),
        "quality_judge_failed": int((verdicts["judge"] == "failed").sum()),
        "quality_rows": 0, "quality_answered_rows": answered.height, "quality_per_tier": per_tier,
    }
    covered = [t for t, e in per_tier.items() if e["estimate"] is not None]
    rows = sum(per_tier[t]["rows"] for t in covered)
    if n == 0 or rows == 0:
        return out
    # a tier's estimate stands for its ok rows; its failed rows are not acceptable (estimate 0, no uncertainty)
    est, low, high = (sum(per_tier[t]["ok_rows"] * per_tier[t][key] for t in covered) / rows
                      for key in ("estimate", "low", "high"))
    out.update(quality_estimate=est, quality_low=low, quality_high=high, quality_rows=rows)
    if "correct" in results.columns:
        accuracy, graded = _accuracy(answered.filter(pl.col("tier").is_in(covered))["correct"])
        if graded:
            out.update(quality_accuracy=accuracy, quality_accuracy_graded=graded,
                       quality_covers_accuracy=_inside(accuracy, low, high))
    return out


def quality_check(summary: dict, min_quality: float | None) -> dict:
    """The run against a quality floor (`sluice run --min-quality`): min_quality and quality_alert, a sentence
    when the estimate's lower bound is under the floor (or no estimate could be made), else None. Nothing without
    a floor. The next run's rule (docs/architecture.md): raise the premium share by a fixed step."""
    if min_quality is None:
        return {}
    low = summary.get("quality_low")
    if low is None:
        alert = f"quality not estimated (no judged shadow pairs): the floor {min_quality:.2f} could not be checked"
    elif low < min_quality:
        alert = (f"quality lower bound {low:.2f} is under the floor {min_quality:.2f} (estimate "
                 f"{summary['quality_estimate']:.2f}, n={summary['quality_n']})")
    else:
        alert = None
    return {"min_quality": float(min_quality), "quality_alert": alert}
