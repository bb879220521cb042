"""Review: the judge of free-text shadow pairs. Is the cheap answer acceptable, given the premium one?

A shadow pair whose answers have a shape (a number, an option letter, JSON under the row's schema) is compared
by shape when the run lands (sluice/contracts/agreement.py). The rest, free text, needs a judge: with
`judge = "<tier>"` in the catalogue, after the last tier has answered, every free-text pair (the cheapest tier's
kept answer and the premium tier's shadow answer to the same row, both ok) is put to the judge tier, through the
same backend interface as any tier (`models.backends.make_backend`). Without a judge the pairs stay unjudged.

The question, asked twice. LLM judges favour whichever answer stands in a given place (position bias: MT-Bench,
Zheng et al. 2023, swap the two answers and keep a verdict only when both orders agree). So each pair is asked in
both orders, with the roles named each time: "cheap_first" puts the cheap answer (the candidate) as Answer A and
the premium answer (the reference) as Answer B; "cheap_second" swaps their places. Each time the question is the
same: is the candidate acceptable in the reference's place?

The verdict, strictly parsed. The first line of the judge's answer (surrounding whitespace removed) must be exactly
`ACCEPTABLE` or `UNACCEPTABLE`; anything else ("Acceptable.", "ACCEPTABLE - mostly", an empty answer) is
unparseable. A lenient parser would have to guess what "mostly acceptable" means, and its guesses would move the
estimate without anyone seeing it.

How the two verdicts combine (sluice/contracts/judging.py names the outcomes):

    both ACCEPTABLE          acceptable
    both UNACCEPTABLE        not acceptable
    one of each ("split")    not acceptable
    any unparseable verdict  unjudged (counted apart as unparseable)
    any failed request       unjudged (counted apart as failed); the row keeps its answer, the run goes on

Why a split counts as not acceptable rather than unjudged: a split means the verdict followed the position, not
the answers, so the judge could not affirm that the cheap answer stands in for premium; the estimate is of "as
good as premium", and a floor (`--min-quality`) is only worth something if doubt lowers it. Dropping splits
instead would make which pairs count depend on the verdicts (the pairs the judge finds hard would vanish from n,
biasing the estimate upwards: the reason the shape comparison never drops equal free-text pairs either). The
price is a conservative bias of at most the split share, which is reported (`split` per tier), so it can be read.
Unparseable verdicts and failed requests say nothing about the answers, only about the judge, so those pairs are
left out of n like any unjudged pair, and counted apart so that a broken judge is visible, not averaged in.

What it costs is the judge's own line (quality assurance): every request lands in `attempts` with kind "judge"
(its tier, tokens, cost; a failed or unparseable one in `errors`, stage review), the run's billing has a
"<judge tier>/judge" entry, and the summary a line of its own; it is no row's cost and never part of any tier's.
API judges are priced at their tier's token prices; a self-hosted judge's worker time is apportioned over its
requests by tokens, like any self-hosted batch.

Resume: the judge's requests, verdicts and billing are written in `<run_dir>/judge/` (verdicts last, the commit
marker); a resumed run reads them back instead of asking again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa

from models.backends import Backend, BatchResult, Completion, Request, make_backend
from models.catalogue import Catalogue, Tier
from models.pricing import cost_usd, worker_price
from sluice.contracts.agreement import answer_shape
from sluice.contracts.judging import (
    JUDGE_ATTEMPT_SCHEMA,
    JUDGE_KIND,
    JUDGE_VERDICT_SCHEMA,
    ORDERS,
    OUTCOME_VERDICT,
    OUTCOMES,
    judge_attempts_path,
    judge_billing_path,
    judge_verdicts_path,
)
from sluice.contracts.shapes import history_turns
from sluice.runs import answers_dir, write_parquet
from sluice.stages.review.decide import latest, read_answers

log = logging.getLogger(__name__)

ACCEPTABLE, UNACCEPTABLE = "ACCEPTABLE", "UNACCEPTABLE"
VERDICTS = {ACCEPTABLE: True, UNACCEPTABLE: False}
# the verdict is one word on the first line; room for a model that adds a reason after it (ignored)
JUDGE_MAX_TOKENS = 16
JUDGE_SYSTEM = ("You are a careful, impartial judge of answers. You compare a candidate answer with a reference "
                "answer to the same request and reply with one word.")
_QUESTION = """Here is a request, and two answers to it.

[Request]
{request}

[Answer A]
{a}

[Answer B]
{b}

{roles} Is the candidate acceptable in the reference's place: does it answer the request as well as the \
reference does, with no error, omission or contradiction that matters? Differences of wording, length or format \
do not matter.

Reply with exactly one word on the first line: ACCEPTABLE or UNACCEPTABLE."""
_ROLES = {"cheap_first": "Answer A is the candidate; Answer B is the reference.",
          "cheap_second": "Answer A is the reference; Answer B is the candidate."}


@dataclass(frozen=True)
class Pair:
    """A free-text shadow pair to judge: the row's request as text, its cheap answer and its premium answer."""

    row_id: str
    tier: str  # the cheap tier
    request: str
    cheap: str
    premium: str


def render_request(prompt: str, system: str | None = None, history: object = None) -> str:
    """The row's conversation as the judge reads it: the system prompt, earlier turns, then the last user turn."""
    parts = [f"(system) {system}"] if system else []
    parts += [f"({role}) {content}" for role, content in history_turns(history)]
    parts.append(prompt if len(parts) == 0 else f"(user) {prompt}")
    return "\n".join(parts)


def judge_prompt(pair: Pair, order: str) -> str:
    """The question for one order (module docstring): the cheap answer as Answer A ("cheap_first") or B."""
    a, b = (pair.cheap, pair.premium) if order == "cheap_first" else (pair.premium, pair.cheap)
    return _QUESTION.format(request=pair.request, a=a, b=b, roles=_ROLES[order])


def parse_verdict(text: str | None) -> bool | None:
    """True for ACCEPTABLE, False for UNACCEPTABLE, exactly, on the first line (surrounding whitespace removed);
    None for anything else (unparseable)."""
    lines = (text or "").strip().splitlines()
    return VERDICTS.get(lines[0].strip()) if lines else None


def combine_verdicts(first: Completion, second: Completion) -> tuple[str, str]:
    """The pair's outcome from its two orders' answers ("cheap_first", "cheap_second"), and why."""
    failed = [f"{order}: {c.error}" for order, c in zip(ORDERS, (first, second)) if not c.ok]
    if failed:
        return "failed", "the judge failed (" + "; ".join(failed) + ")"
    verdicts = [parse_verdict(c.text) for c in (first, second)]
    bad = [f"{order}: {_first_line(c.text)!r}" for order, c, v in zip(ORDERS, (first, second), verdicts) if v is None]
    if bad:
        return "unparseable", "unparseable verdict (" + "; ".join(bad) + ")"
    said = ", ".join(f"{o} {ACCEPTABLE if v else UNACCEPTABLE}" for o, v in zip(ORDERS, verdicts))
    if verdicts[0] and verdicts[1]:
        return "acceptable", f"judged acceptable in both orders ({said})"
    if not verdicts[0] and not verdicts[1]:
        return "unacceptable", f"judged unacceptable in both orders ({said})"
    return "split", f"split verdict, counted as not acceptable ({said})"


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:80] if lines else ""


def free_text_pairs(rows: pl.DataFrame, cheap: pl.DataFrame | None, premium: pl.DataFrame | None) -> list[Pair]:
    """The shadow pairs a judge is needed for: `rows` the shadow partition (the rows' requests), `cheap` the
    cheap tier's latest kept answers, `premium` the premium tier's shadow answers. A pair qualifies when both
    answers are ok and not empty and it has no shape (`sluice.contracts.agreement.answer_shape`, from the row's
    schema, its grader and the premium answer: the same rule the land stage compares shapes by)."""
    if cheap is None or premium is None or rows.height == 0:
        return []
    ok = pl.col("status") == "ok"
    text = pl.coalesce("parsed", "response") if "parsed" in cheap.columns else pl.col("response")
    c = cheap.filter(ok).select("row_id", pl.col("tier").alias("_cheap_tier"), text.alias("_cheap"))
    p = premium.filter(ok).select("row_id", pl.col("response").alias("_premium"))
    df = rows.join(c, on="row_id", how="inner").join(p, on="row_id", how="inner")
    out = []
    for r in df.iter_rows(named=True):
        cheap_text, premium_text = r["_cheap"], r["_premium"]
        if not (cheap_text or "").strip() or not (premium_text or "").strip():
            continue
        if answer_shape(premium_text, r.get("response_schema"), r.get("grader")) is not None:
            continue  # compared by shape when the run lands
        request = render_request(r["prompt"] or "", r.get("system"), r.get("history"))
        out.append(Pair(str(r["row_id"]), str(r["_cheap_tier"]), request, cheap_text, premium_text))
    return out


def _costs(result: BatchResult, tier: Tier, catalogue: Catalogue) -> list[float]:
    """Each request's cost: API usage at the tier's prices (a failed request costs nothing); a self-hosted
    judge's billed worker time apportioned by tokens (in + out), so the requests add up to the bill."""
    comps = result.completions
    if not tier.self_hosted:
        return [tier.token_cost_usd(c.input_tokens, c.output_tokens, c.cached_input_tokens, batch=c.via_batch_api)
                if c.ok else 0.0 for c in comps]
    bill = cost_usd(worker_price(tier.name, catalogue.worker_usd_per_hour(tier)), seconds=result.billed_seconds or 0)
    weights = [c.input_tokens + c.output_tokens for c in comps]
    total = sum(weights)
    return [bill * w / total if total else bill / len(comps) for w in weights] if comps else []


def ask_judge(pairs: list[Pair], tier: Tier, catalogue: Catalogue,
              backend_for: Callable[[Tier], Backend]) -> tuple[pa.Table, pa.Table, dict[str, float]]:
    """Put every pair to the judge tier in both orders; returns (one row per request, one verdict per pair, the
    billing line). Never raises for the judge's sake: a backend that cannot be made or breaks fails its
    requests, and those pairs are unjudged."""
    requests = [Request(row_id=f"judge-{i}-{order}", prompt=judge_prompt(p, order), system=JUDGE_SYSTEM,
                        max_tokens=JUDGE_MAX_TOKENS)
                for i, p in enumerate(pairs) for order in ORDERS]
    try:
        backend = backend_for(tier)
        try:
            result = backend.complete(requests)
        finally:
            backend.close()
        by_id = {c.row_id: c for c in result.completions}
        comps = [by_id.get(r.row_id) or Completion(r.row_id, None, error="the judge returned no answer")
                 for r in requests]
        costs = _costs(BatchResult(comps, result.billed_seconds), tier, catalogue)
    except Exception as exc:  # noqa: BLE001 - the judge never fails a run: its pairs stay unjudged
        log.warning("judge tier %s failed: %s", tier.name, exc)
        result = BatchResult([])
        comps = [Completion(r.row_id, None, error=f"judge tier {tier.name} failed: {type(exc).__name__}: {exc}")
                 for r in requests]
        costs = [0.0] * len(comps)
    attempts, verdicts = [], []
    counts = dict.fromkeys(OUTCOMES, 0)
    for i, p in enumerate(pairs):
        both = comps[2 * i], comps[2 * i + 1]
        for order, c, cost in zip(ORDERS, both, costs[2 * i: 2 * i + 2]):
            verdict = parse_verdict(c.text) if c.ok else None
            attempts.append({
                "row_id": p.row_id, "order": order, "tier": tier.name, "model": tier.model,
                "status": "failed" if not c.ok else "ok" if verdict is not None else "invalid",
                "error": c.error if not c.ok else None if verdict is not None else
                f"unparseable verdict: {_first_line(c.text)!r}",
                "verdict": None if verdict is None else ACCEPTABLE if verdict else UNACCEPTABLE,
                "response": c.text, "input_tokens": c.input_tokens, "output_tokens": c.output_tokens,
                "latency_ms": c.latency_ms, "cost_usd": cost})
        outcome, reason = combine_verdicts(*both)
        counts[outcome] += 1
        verdicts.append({"row_id": p.row_id, "tier": p.tier, "judge_tier": tier.name, "outcome": outcome,
                         "acceptable": OUTCOME_VERDICT[outcome], "reason": reason})
    billing = {"rows": float(len(requests)), "pairs": float(len(pairs)), "cost_usd": float(sum(costs)),
               "billed_seconds": float(result.billed_seconds or 0.0),
               "input_tokens": float(sum(c.input_tokens for c in comps)),
               "output_tokens": float(sum(c.output_tokens for c in comps)),
               **{f"pairs_{k}": float(v) for k, v in counts.items()}}
    return (pa.Table.from_pylist(attempts, schema=JUDGE_ATTEMPT_SCHEMA),
            pa.Table.from_pylist(verdicts, schema=JUDGE_VERDICT_SCHEMA), billing)


def judge_shadow_pairs(run_dir: Path, catalogue: Catalogue, data_dir: str = "data",
                       backend_for: Callable[[Tier], Backend] | None = None,
                       admit: Callable[[list[str]], bool] | None = None) -> tuple[str | None, dict | None]:
    """Judge the run's free-text shadow pairs on the catalogue's judge tier (module docstring). Returns the
    billing key ("<judge tier>/judge") and line, or (None, None) when there is no judge or nothing to judge. A
    resumed run reads the judge's files back. `admit(prompts)`: the run's budget, given one order's prompt of
    every pair; False leaves the pairs unjudged (sluice.stages.budget)."""
    tier = catalogue.judge_tier
    if tier is None:
        return None, None
    key = f"{tier.name}/{JUDGE_KIND}"
    done, bill_path = judge_verdicts_path(run_dir), judge_billing_path(run_dir)
    if done.is_file() and bill_path.is_file():
        return key, json.loads(bill_path.read_text())
    names = catalogue.names
    shadow = run_dir / "shadow" / f"tier={names[-1]}.parquet"
    if len(names) < 2 or not shadow.is_file():
        return None, None
    rows = pl.read_parquet(shadow)
    cheap = latest(read_answers(answers_dir(run_dir, "first"), names[0]),
                   read_answers(answers_dir(run_dir, "retry"), names[0]))  # the kept answer (decide.shadow_rows)
    pairs = free_text_pairs(rows, cheap, read_answers(answers_dir(run_dir, "shadow"), names[-1]))
    if not pairs or (admit is not None and not admit([judge_prompt(p, ORDERS[0]) for p in pairs])):
        return None, None
    attempts, verdicts, billing = ask_judge(
        pairs, tier, catalogue, backend_for or (lambda t: make_backend(t, data_dir=data_dir)))
    bill_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = bill_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(billing))
    tmp.replace(bill_path)
    write_parquet(attempts, judge_attempts_path(run_dir))
    write_parquet(verdicts, done)  # last: the commit marker
    return key, billing

