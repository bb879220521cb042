"""Land: each row's final answer graded against its `reference` (sluice.contracts.grading), and the run's accuracy.

Per row (`grade_results`, after the results are assembled):

    correct       True / False; NULL for rows without a reference, quarantined rows (never answered), and rows
                  whose reference the grader cannot use (the reason says why)
    grade_reason  why the answer is wrong or the row ungraded; NULL when right or without a reference
    grader        the grader that compared (`auto` resolved to the one it picked); NULL when not graded

A failed row with a reference is wrong ("no answer: the row failed"): the run did not produce the answer, so it
counts against accuracy like a wrong one. A duplicate (or cache hit) is graded against its own reference with the
answer it reused. Only the row's final answer is graded, never a shadow answer. A structured answer is graded by
its validated value (`parsed`; a JSON string value as the string itself), free text by its text.

Per run (`accuracy_summary`, part of `summarise` and of `runs`): graded rows, correct rows, accuracy = correct /
graded, and the same per tier (rows never sent, duplicates and cache hits, under "(not sent)").
"""

from __future__ import annotations

import json

import polars as pl

from sluice.contracts.columns import with_grade_columns
from sluice.contracts.grading import grade, resolve_grader

NOT_SENT = "(not sent)"
FAILED = "no answer: the row failed"


def _answer_text(response: str | None, parsed: str | None) -> str | None:
    if parsed is None:
        return response
    try:
        value = json.loads(parsed)
    except (json.JSONDecodeError, TypeError):
        return response
    return value if isinstance(value, str) else parsed


def _grade_row(status: str, response: str | None, parsed: str | None, reference: str | None,
               grader: str | None) -> tuple[bool | None, str | None, str | None]:
    if status == "quarantined" or reference is None or not reference.strip():
        return None, None, None
    try:
        kind = resolve_grader(reference, grader)
    except ValueError as exc:  # ingest quarantines unknown graders; a table built by hand may still hold one
        return None, str(exc), None
    if status == "failed":
        return False, FAILED, kind
    try:
        correct, reason = grade(_answer_text(response, parsed), reference, kind)
    except Exception as exc:  # noqa: BLE001 - grading never stops a landing: the row lands ungraded, with why
        correct, reason = None, f"grading failed: {type(exc).__name__}: {exc}"[:300]
    return correct, reason, kind


def grade_results(df: pl.DataFrame) -> pl.DataFrame:
    """`df` (assembled results: status, response, parsed, reference, grader) with correct, grade_reason and the
    grader that compared."""
    df = with_grade_columns(df)
    parsed = df["parsed"].to_list() if "parsed" in df.columns else [None] * df.height
    graded = [_grade_row(*row) for row in zip(df["status"].to_list(), df["response"].to_list(), parsed,
                                              df["reference"].to_list(), df["grader"].to_list())]
    return df.with_columns(
        pl.Series("correct", [g[0] for g in graded], pl.Boolean),
        pl.Series("grade_reason", [g[1] for g in graded], pl.String),
        pl.Series("grader", [g[2] for g in graded], pl.String),
    )


def _correct_column(results: pl.DataFrame) -> pl.Series:
    col = results["correct"] if "correct" in results.columns else None
    if col is None or col.null_count() == results.height:
        return pl.Series("correct", [None] * results.height, pl.Boolean)
    return col.cast(pl.Boolean)


def _accuracy(graded: int, correct: int) -> float | None:
    return correct / graded if graded else None


def accuracy_summary(results: pl.DataFrame) -> dict:
    """graded (rows with a verdict), correct, accuracy (None when nothing was graded), and accuracy_per_tier:
    {tier: {graded, correct, accuracy}} for tiers with graded rows (sent tiers by name, then "(not sent)")."""
    correct = _correct_column(results)
    tiers = (results["tier"] if "tier" in results.columns else pl.Series([None] * results.height, dtype=pl.String))
    frame = pl.DataFrame({"tier": tiers.fill_null(NOT_SENT), "correct": correct}).filter(
        pl.col("correct").is_not_null())
    per = frame.group_by("tier").agg(pl.len().alias("graded"), pl.col("correct").sum().alias("correct"))
    order = sorted(per["tier"].to_list(), key=lambda t: (t == NOT_SENT, t))
    by = {r["tier"]: r for r in per.to_dicts()}
    n, k = frame.height, int(frame["correct"].sum())
    return {
        "graded": n,
        "correct": k,
        "accuracy": _accuracy(n, k),
        "accuracy_per_tier": {t: {"graded": int(by[t]["graded"]), "correct": int(by[t]["correct"]),
                                  "accuracy": _accuracy(int(by[t]["graded"]), int(by[t]["correct"]))}
                              for t in order},
    }


def baseline_accuracy(results: pl.DataFrame, recorded: dict[str, str | None], key) -> dict:
    """What the all-premium baseline would have scored on the rows this run graded, from the baseline's own
    answers (`recorded`: request key -> answer, e.g. a replay baseline's recordings; `key(row)` gives a row's
    key). Rows the baseline has no answer for are left out and counted. Graded with the grader each row used."""
    rows = results.filter(pl.col("correct").is_not_null()) if "correct" in results.columns else results.clear()
    n = k = missing = 0
    for row in rows.iter_rows(named=True):
        answer = recorded.get(key(row))
        if answer is None:
            missing += 1
            continue
        ok, _ = grade(answer, row["reference"], row["grader"] or resolve_grader(row["reference"], None))
        n += 1
        k += bool(ok)
    return {"baseline_graded": n, "baseline_correct": k, "baseline_accuracy": _accuracy(n, k),
            "baseline_missing": missing}
