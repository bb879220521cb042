"""Review: after a tier has answered, decide which rows are sent again, and where.

    retry       an answer that fails its schema (sluice/contracts/answers.py) is asked once more on the same tier: with
                twice the `max_tokens` when it was cut short, else sampled (temperature RETRY_TEMPERATURE) instead
                of greedy, since a greedy retry would repeat the same answer
    escalation  the batch cascade: answers still invalid after the retry (confidence 0, always candidates) and
                the least confident answers of tiers that report token logprobs go to the next tier: the
                confident ones up to `cascade_share` of the tier's answered rows (less the invalid ones), only
                below `cascade_min_confidence`; all within `cascade_budget_usd` of planned extra spend
                (sluice/stages/review/cascade.py picks by expected gain per dollar)
    shadow      a deterministic `shadow_share` of the cheapest tier's answered rows is also answered by the last
                (premium) tier; the answers are compared and the verdict lands in `router_training`, so the router
                retrains on the user's own traffic (sluice/stages/review/shadow.py)

Each decision is a Parquet partition of rows, written atomically in the run folder (`retry/`, `escalated/`,
`shadow/`) before anything is sent: a resumed run reads the same decision back instead of re-deciding, so no row
is sent (or charged) twice for one decision. The row's cost is the sum of all its attempts (sluice/stages/land/results.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from models.pricing import TierPrice
from sluice.config import RouterSettings
from sluice.contracts.columns import MAX_TOKENS_LIMIT
from sluice.stages.review.cascade import confidence_from_logprobs, escalate_within_budget, escalation_costs
from sluice.stages.review.shadow import shadow_sample
from sluice.stages.review.verifier import AnswerVerifier

RETRY_TEMPERATURE = 0.7
# what an escalation partition adds to its rows: the decision, and the planned cost it charges to the budget
ESCALATION_COLUMNS = ("escalated_from", "cascade_reason", "planned_usd")


def read_answers(answers_dir: Path, tier: str = "*") -> pl.DataFrame | None:
    """Every shard answered under `answers_dir/tier=<tier>/` (None when there are none)."""
    files = sorted(answers_dir.glob(f"tier={tier}/shard-*.parquet"))
    if not files:
        return None
    return pl.from_arrow(pa.concat_tables([pq.read_table(f) for f in files], promote_options="default"))


def latest(*answers: pl.DataFrame | None) -> pl.DataFrame | None:
    """The latest answer per row among answer tables given oldest first."""
    parts = [a for a in answers if a is not None and a.height]
    if not parts:
        return None
    return pl.concat(parts, how="diagonal_relaxed").unique("row_id", keep="last", maintain_order=True)


def retry_rows(rows: pl.DataFrame, answers: pl.DataFrame, default_max_tokens: int) -> pl.DataFrame:
    """Rows whose answer on this tier failed its schema (`status == "invalid"`), set up for a second try."""
    invalid = answers.filter(pl.col("status") == "invalid").select("row_id", "finish_reason")
    out = rows.join(invalid, on="row_id", how="inner", maintain_order="left")
    cut = pl.col("finish_reason") == "length"
    return out.with_columns(
        pl.when(cut).then(pl.min_horizontal(pl.col("max_tokens").fill_null(default_max_tokens) * 2,
                                            pl.lit(MAX_TOKENS_LIMIT)))
        .otherwise(pl.col("max_tokens")).cast(pl.Int32).alias("max_tokens"),
        pl.when(cut).then(pl.col("temperature"))
        .otherwise(pl.col("temperature").fill_null(RETRY_TEMPERATURE)).alias("temperature"),
    ).drop("finish_reason")


def escalation_rows(
    rows: pl.DataFrame,
    answers: pl.DataFrame,
    from_tier: str,
    next_tier: str,
    next_price: TierPrice,
    settings: RouterSettings,
    budget_left_usd: float | None,
    verifier: AnswerVerifier | None = None,
) -> tuple[pl.DataFrame, float]:
    """Rows to answer again on `next_tier`, with `escalated_from` and `cascade_reason`; and their planned cost.

    `answers`: the latest answer of each row on `from_tier`. Invalid answers count as confidence 0. An answer's
    confidence is exp(mean token logprob) where the tier reported logprobs, else the `verifier`'s (answer checks)
    when one is given; answers with neither are not candidates (an unknown confidence is not a low one)."""
    ans = answers.join(rows.select("row_id", "max_tokens", *(["prompt"] if "prompt" in rows.columns else [])),
                       on="row_id", how="inner")
    n = ans.height
    invalid = pl.col("status") == "invalid"
    conf = confidence_from_logprobs(pl.col("mean_logprob").cast(pl.Float64))
    if verifier is not None and n:
        texts = ans.select(pl.coalesce("parsed", "response") if "parsed" in ans.columns else "response").to_series()
        prompts = ans["prompt"].to_list() if "prompt" in ans.columns else None
        checked = pl.Series("_checked", verifier.confidence(texts.to_list(), prompts), dtype=pl.Float64)
        ans = ans.with_columns(checked)
        conf = pl.coalesce(conf, pl.col("_checked"))
    cands = ans.with_columns(pl.when(invalid).then(0.0).otherwise(conf).alias("confidence")).filter(
        invalid | ((pl.col("status") == "ok") & (pl.col("confidence") < settings.cascade_min_confidence))
    )
    # schema failures always qualify (a wrong-shaped answer is no answer) and use up the share cap first; the
    # least confident answers fill what is left of it
    bad = cands.filter(invalid)
    k = max(math.floor(settings.cascade_share * n + 1e-9) - bad.height, 0)
    cands = pl.concat([bad, cands.filter(~invalid).sort("confidence", maintain_order=True).head(k)])
    if cands.height == 0:
        return rows.drop([c for c in ESCALATION_COLUMNS if c in rows.columns]).clear().with_columns(
            pl.lit(None, pl.String).alias("escalated_from"), pl.lit(None, pl.String).alias("cascade_reason"),
            pl.lit(None, pl.Float64).alias("planned_usd")), 0.0
    cands = cands.drop("_checked", strict=False).with_columns(escalation_costs(cands, next_price.usd_per_input_token,
                                                next_price.usd_per_output_token))
    # no dollar cap: the share cap alone bounds the spend (the whole candidate set's cost always fits)
    budget = float(cands["next_cost_usd"].sum()) if budget_left_usd is None else max(budget_left_usd, 0.0)
    picked = escalate_within_budget(cands, budget, min_confidence=1.0).filter(pl.col("escalate"))
    why = pl.when(pl.col("status") == "invalid").then(
        pl.format("schema: {} (after a retry on {})", pl.col("error"), pl.lit(from_tier))
    ).otherwise(pl.col("cascade_reason"))
    picked = picked.select("row_id", pl.col("next_cost_usd").alias("planned_usd"), why.alias("cascade_reason"))
    # a row escalated into this tier carries the earlier decision's columns: this decision replaces them
    out = rows.drop([c for c in ESCALATION_COLUMNS if c in rows.columns]).join(
        picked, on="row_id", how="inner", maintain_order="left").with_columns(
        pl.lit(from_tier).alias("escalated_from"), pl.lit(next_tier).alias("tier"))
    return out, float(picked["planned_usd"].sum())


def planned_escalation_usd(escalated_dir: Path) -> float:
    """Planned spend of every escalation decided so far in a run (each partition carries its rows' plan), so a
    resumed run charges the cascade budget from the decisions on disk: nothing separate to keep in step."""
    files = sorted(escalated_dir.glob("tier=*.parquet"))
    return float(sum(pl.read_parquet(f, columns=["planned_usd"])["planned_usd"].sum() for f in files))


def shadow_rows(rows: pl.DataFrame, answers: pl.DataFrame, share: float, last_tier: str) -> pl.DataFrame:
    """The shadow sample among `rows` answered ok (and kept) on the cheapest tier, to answer on `last_tier`."""
    ok = rows.join(answers.filter(pl.col("status") == "ok").select("row_id"), on="row_id", how="semi",
                   maintain_order="left")
    if ok.height == 0 or share <= 0:
        return ok.clear()
    mask = shadow_sample(ok["row_id"].to_list(), share)
    return ok.filter(pl.Series(mask)).with_columns(pl.lit(last_tier).alias("tier"))
