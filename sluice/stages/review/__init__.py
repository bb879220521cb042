"""Review: after a tier has answered, decide which rows are sent again, and where.

    decide.py   retry, escalation and shadow partitions (each decision written once, read back on resume)
    cascade.py  confidence from logprobs, escalation within a budget, answer signals
    shadow.py   the deterministic shadow sample
    verifier.py answer checks as a confidence, for tiers that report no logprobs
    checks.py   checks of an answer against its question (unused given numbers, invented operands)
    steps.py    every worked step re-computed (units, percentages, words, chains), the final line against it
    judge.py    the judge of free-text shadow pairs (the catalogue's `judge` tier, asked in both orders)
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pyarrow.parquet as pq

from models.catalogue import Catalogue
from models.pricing import tier_prices
from sluice.config import RouterSettings
from sluice.runs import answers_dir, write_parquet
from sluice.stages.review.decide import (
    escalation_rows,
    latest,
    planned_escalation_usd,
    read_answers,
    retry_rows,
    shadow_rows,
)
from sluice.stages.review.judge import judge_shadow_pairs
from sluice.stages.review.verifier import find_verifier

__all__ = ["judge_shadow_pairs", "review_tier"]


def review_tier(run_dir: Path, tier_name: str, catalogue: Catalogue, router: RouterSettings,
                default_max_tokens: int, step: str) -> tuple[Path | None, str | None]:
    """One review step for `tier_name`'s answers: "retry" (schema failures, same tier) or "escalate" (to the next
    tier; with the shadow sample when this is the cheapest tier). Decisions are written once; a resumed run reads
    them back. Returns the partition written for `step` (None: nothing to send) and a line to log."""
    names = catalogue.names
    inputs = [p for p in (run_dir / "routed" / f"tier={tier_name}" / "part-0.parquet",
                          run_dir / "escalated" / f"tier={tier_name}.parquet") if p.is_file()]
    rows = pl.concat([pl.read_parquet(p) for p in inputs], how="diagonal_relaxed") if inputs else None
    first = latest(read_answers(answers_dir(run_dir, "first"), tier_name),
                   read_answers(answers_dir(run_dir, "escalation"), tier_name))
    if rows is None or first is None:
        return None, None
    if step == "retry":
        out = run_dir / "retry" / f"tier={tier_name}.parquet"
        if not out.is_file():
            write_parquet(retry_rows(rows, first, default_max_tokens), out)
        n = pq.read_metadata(out).num_rows
        note = f"review {tier_name}: {n} answers failed their schema, retried once on {tier_name}" if n else None
        return (out if n else None), note
    answers = latest(first, read_answers(answers_dir(run_dir, "retry"), tier_name))
    i = names.index(tier_name)
    if i + 1 >= len(names):
        return None, None
    nxt = names[i + 1]
    out = run_dir / "escalated" / f"tier={nxt}.parquet"
    if not out.is_file():
        spent = planned_escalation_usd(run_dir / "escalated")
        left = None if router.cascade_budget_usd is None else router.cascade_budget_usd - spent
        price = tier_prices(catalogue, router.self_hosted_tokens_per_s)[i + 1]
        verifier = find_verifier(router.verifier, router.model)
        up, _ = escalation_rows(rows, answers, tier_name, nxt, price, router, left, verifier)
        if i == 0 and router.shadow_share > 0 and len(names) > 1:
            stay = rows.join(up.select("row_id"), on="row_id", how="anti", maintain_order="left")
            write_parquet(shadow_rows(stay, answers, router.shadow_share, names[-1]),
                          run_dir / "shadow" / f"tier={names[-1]}.parquet")
        write_parquet(up, out)  # the decision and its planned cost, in one atomic file
    n = pq.read_metadata(out).num_rows
    return (out if n else None), f"review {tier_name}: {n} rows escalated to {nxt}"
