"""Verified clusters in a run: the answer and judge functions that the dedup stage's cluster checks call
(sluice/stages/dedup/verify.py). They are built here, in the task layer, because they answer through the infer
stage's request building and ask the review stage's judge, which the dedup stage may not import.

    answer  the sampled members of a large cluster and its canonical row are answered on the probe tier, the
            catalogue's cheapest: routing has not run yet, and whether two prompts are the same request shows in
            one model's answers to both as well as in any tier's. Each answer's cost is the tier's (API tiers:
            tokens x prices; self-hosted: the batch's worker time shared by tokens); the engine is released after.
    judge   free-text pairs (no number, option letter or JSON to compare) go to the catalogue's judge tier when it
            has one (both orders, a split not acceptable: sluice/stages/review/judge.py); without one they cannot
            be judged and their cluster is refused, its members answered normally.
    budget  with a budget (`budget_usd`, `run_dir`), the probe pass and each judge call are held to the run's ledger
            before they are sent (tasks/budget.py `cluster_check_admission`: keys "<tier>/cluster-check",
            "<judge>/cluster-judge-<hash of the pair>") and settled with what they cost; what does not fit is not sent, and its
            clusters are refused (their members are answered, within the budget, like any row)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import polars as pl

from models.catalogue import Catalogue


@dataclass(frozen=True)
class ClusterProbe:
    catalogue: Catalogue
    data_dir: str = "data"
    default_max_tokens: int = 512
    run_dir: str | None = None  # with budget_usd: the run whose ledger the checks are held to
    budget_usd: float | None = None
    warehouse: str = ""  # where the self-hosted tiers' measured throughput is read (budget estimates)

    def _budget(self):
        from tasks.budget import cluster_check_admission

        if self.run_dir is None:
            return None
        return cluster_check_admission(Path(self.run_dir), self.catalogue, self.budget_usd, self.warehouse,
                                       self.default_max_tokens)

    def answer(self, rows: pl.DataFrame) -> Mapping[str, tuple[str | None, float]]:
        from models.backends import make_backend, release_engines
        from sluice.stages.infer.answer import requests_from, row_costs

        tier = self.catalogue.tiers[0]
        budget, key = self._budget(), f"{tier.name}/cluster-check"
        if budget is not None and not budget[0](key, rows=rows):
            return {}  # not sent: no check can be judged, every cluster is refused
        requests = requests_from(rows.to_arrow(), self.default_max_tokens)
        backend = make_backend(tier, self.data_dir)
        try:
            result = backend.complete(requests)
        finally:
            backend.close()
            release_engines()  # the tiers that answer the run may need the worker's memory
        costs = row_costs(result, tier, self.catalogue) if result.completions else []
        if budget is not None:
            budget[1](key, float(sum(costs)))
        return {c.row_id: (c.text if c.ok else None, cost) for c, cost in zip(result.completions, costs)}

    @property
    def judge(self):
        """judge(prompt, reused answer, own answer) -> (acceptable or None, cost), or None without a judge tier."""
        if self.catalogue.judge_tier is None:
            return None
        return self._judge

    def _judge(self, prompt: str, reused: str | None, own: str | None) -> tuple[bool | None, float]:
        from models.backends import make_backend
        from sluice.stages.review.judge import (
            JUDGE_MAX_TOKENS,
            JUDGE_SYSTEM,
            ORDERS,
            Pair,
            ask_judge,
            judge_prompt,
            render_request,
        )

        if not reused or not own:
            return None, 0.0
        pair = Pair("member", "probe", render_request(prompt), reused, own)  # is the reused answer as good as its own?
        tier = self.catalogue.judge_tier
        budget = self._budget()
        if budget is not None:
            key = f"{tier.name}/cluster-judge-{hashlib.sha1(repr((prompt, reused, own)).encode()).hexdigest()[:12]}"
            if not budget[0](key, judge_prompts=[judge_prompt(pair, ORDERS[0])], system=JUDGE_SYSTEM,
                             max_tokens=JUDGE_MAX_TOKENS):
                return None, 0.0  # not sent: unjudged
        _, verdicts, billing = ask_judge([pair], tier, self.catalogue, lambda t: make_backend(t, self.data_dir))
        if budget is not None:
            budget[1](key, float(billing.get("cost_usd", 0.0)))
        v = verdicts.to_pylist()
        return (v[0]["acceptable"] if v else None), float(billing.get("cost_usd", 0.0))
