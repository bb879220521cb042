"""A tier earns its place: before a run uses a tier that names a `reference_tier` (a quantised model, say), the tier
and its reference answer the same sample of the tier's own rows, and the tier is used only when it is not worse
than the reference by more than its margin.

The reference is the one the catalogue names (the full-precision model on a bigger worker, a premium API, ...),
never a copy the run makes of the tier: a pre-quantised checkpoint (AWQ, GPTQ, compressed-tensors) has no
full-precision copy to make, and comparing it with itself would prove nothing (the catalogue refuses a reference
that is the tier itself or runs the same model the same way).

Each sampled row gets a verdict on each answer, by the first rule that applies:
    graded  the row has a reference answer: both answers are graded against it (sluice/contracts/grading.py)
    shape   no reference, but the answers have a shape (a number, an option letter, JSON under the row's schema):
            the tier's answer is compared with the reference tier's, which counts as right
            (sluice/contracts/agreement.py `compare_shapes`)
    judge   free text, with `judge = "<tier>"` in the catalogue: the judge says whether the tier's answer is
            acceptable in the reference's place, asked in both orders (sluice/stages/review/judge.py, passed in
            by the task layer: tasks/validate.py)
Rows left (free text without a judge, a reference tier that gave no answer) are unjudged: out of n, counted.

The decision. With the verdicts as pairs (tier right?, reference right?) on the same n rows, the difference of the
two accuracies and its 95% interval are Newcombe's paired interval (sluice/stats.py): the tier passes when the
interval's lower end is at least -margin, i.e. the sample shows it is no more than `margin` worse. By shape or
judge the reference is right by definition, so this is the Wilson lower bound of the agreement >= 1 - margin.
The sample size sets how narrow the interval can be: with no difference and a share q of rows on which the two
disagree, the half-width is about 1.96 * sqrt(q / n): a 0.05 margin needs n of about 77 at q = 0.05 and 154 at
q = 0.10 (hence 200 rows by default, `validation_rows`). A tier with fewer rows than that is validated on all of
them; its interval is wider, and a tier that cannot show it is close enough is refused.

A refused tier is not used that run: its rows go to the next tier. Both outcomes land in `validations`: one row per
sampled row (`passed` = the tier's answer right, `score` 1/0, the two answers and how they were judged in
`detail`), and one row for the decision itself (row_id "(decision)", `passed`, `score` = the difference, and
n, both accuracies, the interval, the margin, the unjudged count and what validating cost in `detail`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pyarrow as pa

from models.backends import Completion, Request
from models.catalogue import Catalogue, Tier
from sluice.contracts.agreement import compare_shapes
from sluice.contracts.grading import grade
from sluice.stats import paired_difference_interval

DECISION_ROW = "(decision)"


class TierRefused(RuntimeError):
    """A tier failed its validation and no later tier can take its rows."""


@dataclass
class Decision:
    tier: str
    reference: str
    margin: float
    rows: list[dict]  # one per sampled row: row_id, how, tier_ok, reference_ok, answer, reference_answer, reason
    cost_usd: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def judged(self) -> list[dict]:
        return [r for r in self.rows if r["tier_ok"] is not None and r["reference_ok"] is not None]

    def counts(self) -> tuple[int, int, int, int]:
        """(tier only right, reference only right, both right, neither) over the judged rows."""
        j = self.judged
        return (sum(r["tier_ok"] and not r["reference_ok"] for r in j), sum(r["reference_ok"] and not r["tier_ok"] for r in j),
                sum(r["tier_ok"] and r["reference_ok"] for r in j), sum(not r["tier_ok"] and not r["reference_ok"] for r in j))

    @property
    def interval(self) -> tuple[float, float, float]:
        return paired_difference_interval(*self.counts())

    @property
    def passed(self) -> bool:
        low = self.interval[1]
        return bool(self.judged) and low >= -self.margin - 1e-12

    @property
    def validator(self) -> str:
        return f"reference:{self.tier}:{self.reference}"

    def numbers(self) -> dict:
        j = self.judged
        diff, low, high = self.interval
        n = len(j)
        return {"tier": self.tier, "reference": self.reference, "passed": self.passed, "sampled": len(self.rows),
                "n": n, "unjudged": len(self.rows) - n,
                "by": {how: sum(r["how"] == how for r in j) for how in ("graded", "shape", "judge")},
                "tier_right": sum(bool(r["tier_ok"]) for r in j), "reference_right": sum(bool(r["reference_ok"]) for r in j),
                "tier_accuracy": round(sum(bool(r["tier_ok"]) for r in j) / n, 4) if n else None,
                "reference_accuracy": round(sum(bool(r["reference_ok"]) for r in j) / n, 4) if n else None,
                "difference": None if n == 0 else round(diff, 4), "low": None if n == 0 else round(low, 4),
                "high": None if n == 0 else round(high, 4), "margin": self.margin,
                "cost_usd": round(self.cost_usd, 6), **self.extra}

    def message(self) -> str:
        m = self.numbers()
        verdict = "accepted" if m["passed"] else "REFUSED"
        if not m["n"]:
            return (f"tier {self.tier!r} {verdict} against {self.reference!r}: none of {m['sampled']} sampled rows "
                    "could be judged (free text needs the catalogue's judge)")
        return (f"tier {self.tier!r} {verdict} against {self.reference!r}: accuracy {m['tier_accuracy']:.3f} vs "
                f"{m['reference_accuracy']:.3f}, difference {m['difference']:+.3f} [95% {m['low']:+.3f}, "
                f"{m['high']:+.3f}] on n={m['n']} rows (margin {self.margin:.2f}; {m['unjudged']} unjudged)")


def sample_rows(rows: pa.Table, n: int) -> pa.Table:
    """`n` rows, the same ones on every attempt: those whose row_id hashes lowest (spread over the partition)."""
    ids = rows.column("row_id").to_pylist()
    order = sorted(range(len(ids)), key=lambda i: hashlib.sha256(str(ids[i]).encode()).hexdigest())
    return rows.take(sorted(order[:n]))


def verdict(row: dict, answer: Completion, ref: Completion) -> dict:
    """One sampled row's verdicts (module docstring); `row` holds its reference, grader and response_schema."""
    text, ref_text = (answer.text if answer.ok else None), (ref.text if ref.ok else None)
    out = {"row_id": row["row_id"], "answer": text, "reference_answer": ref_text, "reason": None}
    if (row.get("reference") or "").strip():
        ok, why = grade(text, row["reference"], row.get("grader") or "auto")
        ref_ok, _ = grade(ref_text, row["reference"], row.get("grader") or "auto")
        if ok is not None:
            return {**out, "how": "graded", "tier_ok": bool(ok), "reference_ok": bool(ref_ok), "reason": why}
    if ref_text is None:
        return {**out, "how": None, "tier_ok": None, "reference_ok": None,
                "reason": f"the reference tier gave no answer: {ref.error}"}
    v = compare_shapes(text, ref_text, row.get("response_schema"), row.get("grader"))
    if v.acceptable is None:
        return {**out, "how": None, "tier_ok": None, "reference_ok": None, "reason": v.reason}
    return {**out, "how": "shape", "tier_ok": v.acceptable, "reference_ok": True, "reason": v.reason}


# puts the unjudged free-text pairs to the catalogue's judge, in place (rows, requests by row id, catalogue, how to
# make a backend); returns what judging cost. The judge lives in the review stage: the task layer passes it in.
FreeTextJudge = Callable[[list[dict], dict[str, Request], Catalogue, Callable[[Tier], object]], float]


def validate_tier(tier: Tier, catalogue: Catalogue, sample: pa.Table, default_max_tokens: int,
                  data_dir: str = "data", backend_for: Callable[[Tier], object] | None = None,
                  judge: FreeTextJudge | None = None) -> Decision:
    """Answer `sample` (rows of the tier's partition) on the tier, then on its reference (one engine at a time),
    judge each pair and decide (module docstring). `judge`: asked about the free-text pairs, when given."""
    from models.backends import make_backend, release_engines
    from sluice.stages.infer.answer import requests_from, row_costs

    reference = reference_of(tier, catalogue)
    make = backend_for or (lambda t: make_backend(t, data_dir))
    requests = requests_from(sample, default_max_tokens)
    answers, cost = {}, 0.0
    for t in (tier, reference):
        backend = make(t)
        try:
            result = backend.complete(requests)
        finally:
            backend.close()
            release_engines()  # the reference may need the worker's memory
        cost += sum(row_costs(result, t, catalogue)) if result.completions else 0.0
        answers[t.name] = {c.row_id: c for c in result.completions}
    return decide(tier, catalogue, sample, answers, cost, default_max_tokens, make, judge)


def reference_of(tier: Tier, catalogue: Catalogue) -> Tier:
    if tier.reference_tier is None:
        raise ValueError(f"tier {tier.name!r} names no reference_tier: nothing to validate against")
    return catalogue.tier(tier.reference_tier)


def completions_from(answers: pa.Table) -> dict[str, Completion]:
    """Answers as an answer shard holds them (ANSWER_SCHEMA: answered elsewhere, e.g. by the pool's workers), by
    row id, as the backends return them."""
    return {r["row_id"]: Completion(r["row_id"], r["response"], int(r["input_tokens"] or 0),
                                    int(r["output_tokens"] or 0), float(r["latency_ms"] or 0.0), r["finish_reason"],
                                    None if r["status"] == "ok" else (r["error"] or r["status"]))
            for r in answers.select(["row_id", "response", "status", "error", "input_tokens", "output_tokens",
                                     "latency_ms", "finish_reason"]).to_pylist()}


def decide(tier: Tier, catalogue: Catalogue, sample: pa.Table, answers: dict[str, dict[str, Completion]],
           cost: float, default_max_tokens: int, make: Callable[[Tier], object],
           judge: FreeTextJudge | None = None) -> Decision:
    """The decision from both tiers' answers to `sample` (by tier name, then row id) and what they cost."""
    from sluice.stages.infer.answer import requests_from

    reference = reference_of(tier, catalogue)
    cols = [c for c in ("row_id", "reference", "grader", "response_schema") if c in sample.column_names]
    rows = [verdict(r, answers[tier.name].get(r["row_id"]) or Completion(r["row_id"], None, error="no answer"),
                    answers[reference.name].get(r["row_id"]) or Completion(r["row_id"], None, error="no answer"))
            for r in sample.select(cols).to_pylist()]
    if judge is not None:
        cost += judge(rows, {r.row_id: r for r in requests_from(sample, default_max_tokens)}, catalogue, make)
    return Decision(tier.name, reference.name, tier.validation_margin, rows, cost)


def land_decision(warehouse: str | Path, run_id: str, d: Decision) -> None:
    """The decision and its per-row verdicts into `validations` (replacing an earlier attempt's)."""
    from sluice.warehouse.db import connect

    now = datetime.now(timezone.utc)
    per_row = [[run_id, r["row_id"], d.validator, r["tier_ok"], None if r["tier_ok"] is None else float(r["tier_ok"]),
                json.dumps({k: r[k] for k in ("how", "reference_ok", "answer", "reference_answer", "reason")}), now]
               for r in d.rows]
    decision = [run_id, DECISION_ROW, d.validator, d.passed, d.numbers()["difference"], json.dumps(d.numbers()), now]
    with connect(warehouse) as con:
        con.execute("DELETE FROM validations WHERE run_id = ? AND validator = ?", [run_id, d.validator])
        con.executemany("INSERT INTO validations (run_id, row_id, validator, passed, score, detail, created_at) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?)", [*per_row, decision])


def decision_file(run_dir: Path, tier: str) -> Path:
    return run_dir / "validations" / f"tier={tier}.json"


def save_decision(run_dir: Path, d: Decision) -> None:
    """Kept in the run folder: a resumed run reuses the decision instead of validating (and paying) again."""
    path = decision_file(run_dir, d.tier)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(asdict(d)))
    tmp.replace(path)


def load_decision(run_dir: Path, tier: str) -> Decision | None:
    path = decision_file(run_dir, tier)
    return Decision(**json.loads(path.read_text())) if path.is_file() else None


def validation_billing(run_dir: Path) -> dict[str, dict]:
    """What validating each tier cost this run, by tier (the decisions kept in the run folder): its line in
    runs.billing['validation'], added to the run's total at landing (sluice/stages/land/validated.py)."""
    out = {}
    for path in sorted((run_dir / "validations").glob("tier=*.json")):
        d = Decision(**json.loads(path.read_text()))
        out[d.tier] = {"cost_usd": round(d.cost_usd, 6), "sampled": len(d.rows), "reference": d.reference,
                       "passed": d.passed}
    return out


def hand_on(run_dir: Path, partitions: dict[str, Path], refused: str, to: str) -> None:
    """A refused tier's rows go to the next tier: its routed rows join the next tier's partition (rewritten from
    routed.parquet at every start of the run, so a resumed run hands them on the same way), and rows escalated to
    it by a cheaper tier become the next tier's escalations."""
    import pyarrow.parquet as pq

    from sluice.runs import write_parquet

    if refused in partitions:
        tables = [pq.read_table(p) for p in (partitions.get(to), partitions[refused]) if p is not None]
        merged = pa.concat_tables(tables, promote_options="default")
        partitions[to] = write_parquet(merged, run_dir / "routed" / f"tier={to}" / "part-0.parquet")
        del partitions[refused]
    escalated = run_dir / "escalated" / f"tier={refused}.parquet"
    if escalated.is_file():
        target = escalated.with_name(f"tier={to}.parquet")
        tables = [pq.read_table(p) for p in (target, escalated) if p.is_file()]
        write_parquet(pa.concat_tables(tables, promote_options="default"), target)
        escalated.unlink()
