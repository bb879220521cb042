"""Land: one `results` row per input row, every attempt in `attempts`, the run in `runs`.

    results.py  combine a row's attempts, assemble the results table, land it in one transaction
    grading.py  each row's answer against its reference (correct, grade_reason); the run's accuracy per tier
    labels.py   router labels from the shadow pairs and the cheapest tier's graded rows
    estimate.py the run's quality estimated from the shadow pairs (judged by shape, or by the judge), per tier and
                for the batch
    judged.py   the judge's outcomes, its requests as attempts, and its spend as the run's own line
    checked.py  the dedup stage's cluster checks' spend as the run's own line, in its total
    validated.py  validating tiers against their reference (samples answered twice, judge calls), in its total
    totals.py   the run's total and saving, the rows' cost plus each of those lines
    chargeback.py  the input's own columns carried to the results (meta, the results file); each row's tags
    errors.py   the run's `errors` rows: every failed attempt, quarantined, deferred or failed row
    interrupted.py  requests a kill cut off, as attempts and in their rows' cost (the provider billed them)
    trimmed.py  trimmed prompts: the original lands in `prompt`, the tokens trimming saved beside it
    engine_share.py  a drop-box pass's engine starts, apportioned across its landed runs by tokens (after landing)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from models.backends import Request, make_backend
from models.catalogue import Tier
from sluice.contracts.columns import ATTEMPT_KINDS, DEFAULT_MAX_TOKENS, DEFERRED
from sluice.contracts.shapes import history_turns
from sluice.runs import answers_dir, write_parquet
from sluice.stages.land.chargeback import apply_run_tags, meta_values, read_pass_through, results_file
from sluice.stages.land.estimate import estimate_quality
from sluice.stages.land.grading import baseline_accuracy
from sluice.stages.land.interrupted import add_interrupted, interrupted_summary, read_interrupted
from sluice.stages.land.judged import judge_attempts, judge_line, judge_outcomes
from sluice.stages.land.labels import labels_from_grades, labels_from_shadow
from sluice.stages.land.results import assemble_results, combine_attempts, land_results
from sluice.stages.land.trimmed import trim_summary
from sluice.warehouse.deferred import record_run_budget

__all__ = ["assemble_results", "combine_attempts", "land_results", "land_run"]


def land_run(run_dir: Path, warehouse: str, run: dict, tier_order: list[str] | None = None,
             baseline: Tier | None = None) -> tuple[dict, int]:
    """Land a run from its folder: the routed rows, every tier's answers of every attempt kind and the review's
    escalation decisions, and the source file's own columns (`run["source"]`, read again); `run["tags"]`: the
    run's chargeback tags; returns the run's summary and the number of rows landed. With a `baseline` tier whose
    answers are known for every row (a replay tier), the summary also says what all-premium would have scored."""
    routed = pq.read_table(run_dir / "routed.parquet")
    attempts = [(kind, pq.read_table(p)) for kind in ATTEMPT_KINDS
                for p in sorted(answers_dir(run_dir, kind).glob("tier=*/shard-*.parquet"))]
    escalated = [pl.read_parquet(p, columns=["row_id", "escalated_from", "cascade_reason"])
                 for p in sorted((run_dir / "escalated").glob("tier=*.parquet"))]
    order = tier_order or sorted({str(t) for _, a in attempts for t in a["tier"].to_pylist()})
    final, every, pairs = combine_attempts(attempts, order, pl.concat(escalated) if escalated else None)
    final, every = add_interrupted(final, every, cut_off := read_interrupted(run_dir), order)  # billed, re-sent
    results = assemble_results(routed, final, run["run_id"], run["dataset"])
    results, quality = _baseline_quality(results, baseline)
    # chargeback: the input's own columns (results.meta; unchanged in the results file) and the run's tags
    passthrough = read_pass_through(run.get("source"), results["row_index"].to_list())
    if passthrough is not None:
        own = pl.Series("_meta", meta_values(passthrough), pl.String)  # carried rows (deferred_from) keep theirs
        results = results.with_columns(pl.when(pl.col("deferred_from").is_null()).then(own).otherwise("meta")
                                       .alias("meta"))
    results = apply_run_tags(results, run.get("tags"))
    write_parquet(results_file(results, passthrough), run_dir / "results.parquet")
    hints = pl.from_arrow(routed.select(["row_id", "grader"])) if "grader" in routed.column_names else None
    assert hints is None or isinstance(hints, pl.DataFrame)
    judged, asked = judge_outcomes(run_dir), judge_attempts(run_dir, every)  # free-text pairs, if a judge ran
    estimate = estimate_quality(pairs, results, order[-1] if order else None, hints, judged)  # shadow: last tier
    labels = None
    if pairs.height:
        prompts = results.select("row_id", "prompt")
        labels = labels_from_shadow(pairs.join(prompts, on="row_id").select(
            pl.lit(run["run_id"]).alias("run_id"), "row_id", "prompt",
            pl.col("response").alias("cheap_response"), pl.col("_shadow_response").alias("premium_response")))
    if order:  # a graded row's verdict is a better label than agreement with premium: it replaces the pair's
        graded = labels_from_grades(results, run["run_id"], order[0])
        labels = pl.concat([labels, graded]).unique("row_id", keep="last") if labels is not None else graded
    summary = land_results(warehouse, results, run, attempts=every if asked is None else pl.concat([every, asked]),
                           labels=labels, baseline_quality=quality, quality_estimate=estimate,
                           judge=judge_line(asked, judged))
    summary.update(**interrupted_summary(cut_off), **trim_summary(results))  # their own lines in the summary
    if run.get("budget"):  # the hard budget's ledger (sluice.stages.budget) and the rows it deferred: runs.budget
        summary["budget"] = {**run["budget"], "deferred_rows": int((results["status"] == DEFERRED).sum())}
        record_run_budget(warehouse, run["run_id"], summary["budget"])
    return summary, results.height


def _baseline_quality(results: pl.DataFrame, baseline: Tier | None) -> tuple[pl.DataFrame, dict | None]:
    """With a replay baseline, the all-premium counterfactual is known row by row, not estimated: each row's
    `baseline_cost_usd` becomes what the baseline's own recorded answer to it costs (its tokens at the baseline's
    list prices), and the graded rows are graded on the baseline's answers too (`baseline_accuracy`). Rows it has
    no recording for keep the estimate (the row's own tokens at the baseline's prices)."""
    if baseline is None or baseline.backend != "replay":
        return results, None
    sent = results.filter(pl.col("status") != "quarantined")
    requests = [Request(row_id=r["row_id"], prompt=r["prompt"], system=r["system"],
                        max_tokens=r["max_tokens"] or DEFAULT_MAX_TOKENS, history=history_turns(r.get("history")))
                for r in sent.iter_rows(named=True)]
    replayed = {c.row_id: c for c in make_backend(baseline).complete(requests).completions if c.ok}
    priced = {rid: baseline.token_cost_usd(c.input_tokens, c.output_tokens) for rid, c in replayed.items()}
    results = results.with_columns(
        pl.col("row_id").replace_strict(priced, default=None, return_dtype=pl.Float64)
        .fill_null(pl.col("baseline_cost_usd")).alias("baseline_cost_usd"))
    if "correct" not in results.columns or results["correct"].null_count() == results.height:
        return results, None
    answers = {rid: c.text for rid, c in replayed.items()}
    return results, baseline_accuracy(results, answers, lambda row: row["row_id"])
