"""Land: what the judge of free-text shadow pairs did, and what it cost (its files: sluice/contracts/judging.py).

    judge_outcomes  one outcome per judged pair, for the quality estimate (sluice/stages/land/estimate.py)
    judge_attempts  its requests as rows of `attempts` (kind "judge"), numbered after the row's own attempts
    judge_spend     its cost as its own line of the run (quality assurance) and in the run's total

The judge's spend is no row's cost: a row's `cost_usd` (and each tier's sum of them) is what answering it cost, so
the judge is kept out of `results` and out of every tier's line. It is the run's: `runs.judge_cost_usd`, a
"<tier>/judge" entry in `runs.billing`, and part of `runs.cost_usd`, so the total is the tiers' cost plus the
judge's, and the saving against all-premium is net of it. `attempts` holds every request, the judge's too: its
costs add up to the run's total.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from sluice.contracts.judging import JUDGE_KIND, judge_attempts_path, judge_verdicts_path
from sluice.stages.land.totals import plus_spend


def judge_outcomes(run_dir: Path) -> pl.DataFrame | None:
    """row_id, tier, judge_tier, outcome, acceptable, reason of each pair the judge was asked about (None: the
    judge did not run)."""
    path = judge_verdicts_path(run_dir)
    if not path.is_file():
        return None
    df = pl.from_arrow(pq.read_table(path))
    assert isinstance(df, pl.DataFrame)
    return df


def judge_attempts(run_dir: Path, every: pl.DataFrame) -> pl.DataFrame | None:
    """The judge's requests (None: the judge did not run) in the columns of `every` (`combine_attempts`'s
    attempt log), kind "judge", numbered after each row's own attempts: cheap answer first, then second."""
    path = judge_attempts_path(run_dir)
    if not judge_verdicts_path(run_dir).is_file() or not path.is_file():
        return None
    asked = pl.from_arrow(pq.read_table(path))
    assert isinstance(asked, pl.DataFrame)
    last = every.group_by("row_id").agg(pl.col("attempt").max().alias("_last"))
    asked = asked.with_row_index("_i").join(last, on="row_id", how="left").sort("_i")
    numbered = asked.with_columns(
        (pl.col("_last").fill_null(0) + pl.int_range(pl.len()).over("row_id") + 1).cast(every.schema["attempt"])
        .alias("attempt"),
        pl.lit(JUDGE_KIND).alias("kind"),
        pl.lit(None, pl.Boolean).alias("schema_valid"),
        pl.lit(None, pl.Float64).alias("mean_logprob"),
        pl.lit(None, pl.Boolean).alias("usage_estimated"),
    )
    return numbered.select(every.columns).cast(dict(every.schema))


def judge_line(attempts: pl.DataFrame | None, outcomes: pl.DataFrame | None) -> dict | None:
    """The judge's line of the run (None: it did not run): its tier, cost, requests and pairs."""
    if attempts is None or outcomes is None:
        return None
    tiers = attempts["tier"].unique().to_list() or outcomes["judge_tier"].unique().to_list()
    return {"judge_tier": tiers[0] if tiers else None, "judge_cost_usd": float(attempts["cost_usd"].sum()),
            "judge_requests": attempts.height, "judge_pairs": outcomes.height}


def judge_spend(summary: dict, judge: dict | None) -> dict:
    """The judge's line added to a run's summary (`summarise`): judge_tier, judge_cost_usd, judge_requests,
    judge_pairs, and the run's total cost and saving with the judge's cost in them (module docstring)."""
    if not judge:
        return {}
    return {**judge, **plus_spend(summary, judge["judge_cost_usd"])}
