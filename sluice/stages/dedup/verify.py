"""Verified clusters: before one answer is reused for a large cluster, a sample of its members is checked.

A cluster is a canonical row and the rows marked near or semantic duplicates of it (exact duplicates are the same
request and are not checked). For every cluster of at least `min_cluster` rows, `sample` members (chosen by a hash
of their row ids, so a resumed run picks the same) are answered on their own, through the `answer` function the
caller passes (in a run: `tasks.verify_clusters`, on the catalogue's cheapest tier, before routing), together with
the canonical row, and each own answer is compared with the canonical's answer, the one the member would reuse:

    shape   `sluice.contracts.agreement.compare_shapes` where the answers have a shape (the row's response_schema,
            its grader, or a number / option letter / JSON premium-style answer): the reused answer must equal
            the member's own by shape
    judge   free-text pairs go to the `judge` function, when one is passed (the review stage's judge of free-text
            pairs, once it lands): judge(prompt, reused answer, own answer) -> (acceptable or None, cost in USD)

The verdicts decide: a cluster reuses its answer only when at least half its checks could be judged and its
failures stay within delta of them (failures <= floor(delta x judged): with fewer than 1 / delta checks, one
wrong reuse refuses the cluster, because its own rate is then at least 1 / judged > delta). A refused cluster, and
one that could not be judged, has every member answered normally (`refuse`). Every check's cost (the members' and
the canonical's probe answers and the judge's calls) is counted in `ClusterChecks.cost_usd`, and each verdict is kept as a label
for the next run's calibration (`sluice.stages.dedup.verdicts`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping

import polars as pl

from sluice.contracts.agreement import compare_shapes

# answer(rows) -> {row_id: (answer text or None, cost in USD)}: the rows' own answers, on the tier that would answer
# the canonical row
AnswerFn = Callable[[pl.DataFrame], Mapping[str, tuple[str | None, float]]]
JudgeFn = Callable[[str, str | None, str | None], tuple[bool | None, float]]
CHECKED_KINDS = ("near", "semantic")


@dataclass(frozen=True)
class VerifyConfig:
    """min_cluster: rows (canonical included) from which a cluster is checked; sample: members checked each."""

    min_cluster: int = 8
    sample: int = 4


@dataclass
class ClusterChecks:
    reused: list[str] = field(default_factory=list)  # canonical row ids whose clusters keep their reuse
    refused: dict[str, str] = field(default_factory=dict)  # canonical row id -> why its members are answered
    verdicts: list[dict] = field(default_factory=list)  # per checked member: canonical, member, kind, score, ok
    checked_rows: int = 0
    cost_usd: float = 0.0

    def record(self) -> dict:
        return {"clusters_checked": len(self.reused) + len(self.refused), "clusters_refused": len(self.refused),
                "refused": self.refused, "members_checked": self.checked_rows, "cost_usd": round(self.cost_usd, 6),
                "verdicts": [[v["words"], v["kind"], v["score"], v["ok"]] for v in self.verdicts if v["ok"] is not None]}


def large_clusters(rows: pl.DataFrame, cfg: VerifyConfig) -> dict[str, list[str]]:
    """canonical row id -> its near / semantic duplicates' row ids, for clusters of >= cfg.min_cluster rows."""
    dups = rows.filter((pl.col("status") == "duplicate") & pl.col("dup_kind").is_in(list(CHECKED_KINDS)))
    groups = dups.group_by("dup_of", maintain_order=True).agg(pl.col("row_id"))
    return {c: m for c, m in groups.iter_rows() if len(m) + 1 >= cfg.min_cluster}


def _pick(members: list[str], k: int) -> list[str]:
    return sorted(members, key=lambda r: hashlib.sha1(r.encode()).hexdigest())[:k]


def shape_verdict(row: dict, reused: str | None, own: str | None, judge: JudgeFn | None) -> tuple[bool | None, float]:
    """Is the reused answer acceptable for this member, given its own answer? By shape, else the judge."""
    verdict = compare_shapes(reused, own, row.get("response_schema"), row.get("grader"))
    if verdict.acceptable is not None or verdict.shape is not None or judge is None:
        return verdict.acceptable, 0.0
    return judge(row.get("prompt") or "", reused, own)


def allowed_failures(judged: int, delta: float) -> int:
    return math.floor(delta * judged + 1e-9)


def check_clusters(rows: pl.DataFrame, answer: AnswerFn, delta: float, cfg: VerifyConfig = VerifyConfig(),
                   judge: JudgeFn | None = None) -> ClusterChecks:
    """Check every large cluster of `rows` (the dedup stage's output) and decide which keep their reuse."""
    out = ClusterChecks()
    clusters = large_clusters(rows, cfg)
    if not clusters:
        return out
    picked = {c: _pick(m, cfg.sample) for c, m in clusters.items()}
    wanted = set(picked) | {r for m in picked.values() for r in m}
    subset = rows.filter(pl.col("row_id").is_in(list(wanted)))
    answers = answer(subset)
    out.checked_rows = sum(len(m) for m in picked.values())
    out.cost_usd = sum(cost for _, cost in answers.values())  # the canonical's probe too: not the answer it lands
    by_id = {r["row_id"]: r for r in subset.iter_rows(named=True)}
    for canonical, members in picked.items():
        reused = answers.get(canonical, (None, 0.0))[0]
        failures = judged = 0
        for m in members:
            row = by_id[m]
            ok, cost = shape_verdict(row, reused, answers.get(m, (None, 0.0))[0], judge)
            out.cost_usd += cost
            out.verdicts.append({"canonical": canonical, "member": m, "kind": row["dup_kind"],
                                 "score": row["dup_score"], "ok": ok,
                                 "words": max(len((row.get("prompt") or "").split()),
                                              len((by_id[canonical].get("prompt") or "").split()))})
            if ok is not None:
                judged += 1
                failures += not ok
        if judged * 2 < len(members):
            out.refused[canonical] = f"only {judged} of {len(members)} checks could be judged"
        elif failures > allowed_failures(judged, delta):
            out.refused[canonical] = f"{failures} of {judged} checked members needed another answer"
        else:
            out.reused.append(canonical)
    return out


def refuse(rows: pl.DataFrame, refused: Mapping[str, str] | list[str]) -> pl.DataFrame:
    """Every near / semantic member of the refused clusters back to pending: answered normally."""
    back = (pl.col("status") == "duplicate") & pl.col("dup_kind").is_in(list(CHECKED_KINDS)) \
        & pl.col("dup_of").is_in(list(refused))
    return rows.with_columns(
        pl.when(back).then(pl.lit("pending")).otherwise(pl.col("status")).alias("status"),
        *(pl.when(back).then(None).otherwise(pl.col(c)).alias(c) for c in ("dup_of", "dup_kind", "dup_score")),
    )
