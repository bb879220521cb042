"""The check a tier with a `reference_tier` (a quantised model, say) passes before a run uses it."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from models.backends import Request
from models.catalogue import Catalogue
from sluice.runs import answers_dir
from sluice.stages.infer.tier_validation import (
    TierRefused,
    completions_from,
    decide,
    hand_on,
    land_decision,
    load_decision,
    reference_of,
    sample_rows,
    save_decision,
)
from sluice.stages.infer.tier_validation import validate_tier as compare_with_reference
from tasks.budget import settle
from tasks.progress import stage_finished, stage_started


def judge_free_text(rows: list[dict], requests: dict[str, Request], catalogue: Catalogue, backend_for) -> float:
    """The catalogue's judge on a validation's unjudged free-text pairs (sluice/stages/review/judge.py: both
    orders, a split not acceptable), in place; returns what judging cost."""
    from sluice.stages.review.judge import Pair, ask_judge, render_request

    todo = [r for r in rows if r["how"] is None and r["answer"] and r["reference_answer"]]
    if catalogue.judge_tier is None or not todo:
        return 0.0
    pairs = [Pair(r["row_id"], "candidate", render_request(requests[r["row_id"]].prompt, requests[r["row_id"]].system),
                  r["answer"], r["reference_answer"]) for r in todo]
    _, verdicts, billing = ask_judge(pairs, catalogue.judge_tier, catalogue, backend_for)
    by_row = {v["row_id"]: v for v in verdicts.to_pylist()}
    for r in todo:
        v = by_row.get(r["row_id"])
        if v is not None and v["acceptable"] is not None:
            r.update(how="judge", tier_ok=bool(v["acceptable"]), reference_ok=True, reason=v["reason"])
    return float(billing.get("cost_usd", 0.0))


@task(name="validate-tier", cache_policy=NO_CACHE)
def validate_tier(
    tier_name: str, partitions: dict[str, Path], run_dir: Path, run_id: str, catalogue: Catalogue, data_dir: str,
    warehouse: str, default_max_tokens: int, dispatch: str | None = None, dispatch_api_tiers: bool = False,
    shard_rows: int = 256, catalogue_path: str | None = None,
) -> tuple[bool, dict[str, Path]]:
    """Before a tier with a `reference_tier` answers: compare the two on a sample of the tier's rows and land the
    decision in `validations` (sluice/stages/infer/tier_validation.py). Returns (use it?, the partitions the run
    goes on with): refused, the tier's rows are handed to the next tier and the run does not use it. A resumed run
    reuses the decision kept in the run folder. With `dispatch` (scale-out), the sample is answered on the pool's
    workers like any pass (self-hosted tiers; API tiers too with `dispatch_api_tiers`); the verdicts, the judge
    and the decision stay here."""
    logger = get_run_logger()
    tier = catalogue.tier(tier_name)
    decision = load_decision(run_dir, tier_name)
    if decision is None:
        parts = [p for p in (partitions.get(tier_name), run_dir / "escalated" / f"tier={tier_name}.parquet")
                 if p is not None and p.is_file()]
        rows = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default") if parts else None
        if rows is None or rows.num_rows == 0:
            return True, partitions  # nothing for it to answer
        stage_started(f"validate {tier_name}", min(tier.validation_rows, rows.num_rows))
        sample = sample_rows(rows, tier.validation_rows)
        if dispatch:
            decision = _answered_on_the_pool(tier, catalogue, sample, run_dir, data_dir, default_max_tokens,
                                             dispatch, dispatch_api_tiers, shard_rows, catalogue_path)
        else:
            decision = compare_with_reference(tier, catalogue, sample, default_max_tokens, data_dir,
                                              judge=judge_free_text)
        land_decision(warehouse, run_id, decision)
        # with a budget, what validating cost is booked in the run's ledger: it is not admitted first (the
        # decision needs the whole sample), so past the cap it shows as an overrun, never hidden
        settle(run_dir, f"{tier_name}/validation", {"cost_usd": decision.cost_usd})
        save_decision(run_dir, decision)
        stage_finished(f"validate {tier_name}")
    logger.info(decision.message())
    if decision.passed:
        return True, partitions
    later = catalogue.names[catalogue.names.index(tier_name) + 1:]
    if not later:
        raise TierRefused(decision.message() + "; no later tier can take its rows: fix the catalogue and rerun")
    partitions = dict(partitions)
    hand_on(run_dir, partitions, tier_name, later[0])
    logger.info("tier %s is not used this run: its rows go to %s", tier_name, later[0])
    return False, partitions


def _answered_on_the_pool(tier, catalogue: Catalogue, sample: pa.Table, run_dir: Path, data_dir: str,
                          default_max_tokens: int, dispatch: str, dispatch_api_tiers: bool, shard_rows: int,
                          catalogue_path: str | None):
    """The tier and its reference answer the sample as dispatched passes (answers under validation/<tier>/, apart
    from the rows' attempts), then the decision is taken from their answer shards."""
    from models.backends import make_backend, release_engines
    from sluice.stages.review.decide import read_answers
    from tasks.infer import answer_pass

    kind = f"validation/{tier.name}"
    part = answers_dir(run_dir, kind) / "sample.parquet"
    if not part.is_file():  # a resumed run answers the same sample (answered shards are kept)
        part.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(sample, part)
    sample = pq.read_table(part)
    answers, cost = {}, 0.0
    for t in (tier, reference_of(tier, catalogue)):
        sends = dispatch if (t.self_hosted or dispatch_api_tiers) else None
        billing = answer_pass(t.name, part, run_dir, catalogue, data_dir, default_max_tokens, shard_rows, kind,
                              dispatch=sends, catalogue_path=catalogue_path)
        if sends is None:
            release_engines()  # answered here: the reference may need the memory
        cost += float(billing.get("cost_usd", 0.0))
        found = read_answers(answers_dir(run_dir, kind), t.name)
        answers[t.name] = completions_from(found.to_arrow()) if found is not None else {}
    return decide(tier, catalogue, sample, answers, cost, default_max_tokens,
                  lambda t: make_backend(t, data_dir), judge=judge_free_text)
