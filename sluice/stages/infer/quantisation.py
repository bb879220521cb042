"""Quantised tiers earn their place: compare a quantised engine with the full-precision one before use.

Greedy decoding makes the comparison exact: for the same prompt, a model and its quantised copy produce the same
tokens until their top choices first differ. Per sampled row we record
    exact       the two answers are identical;
    agreement   the shared leading part of the two answers, in words, over the longer answer (1.0 = identical,
                0.0 = they differ from the first word): how long the quantised model stays on the reference's path.
The tier passes when the mean agreement reaches `threshold`; otherwise the run refuses to use it, with the numbers
in the message. Each sampled row lands in the warehouse `validations` table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from models.backends import Request
from models.catalogue import Tier


class QuantisationRejected(RuntimeError):
    """The quantised model disagrees with its full-precision reference too often to be trusted."""


def agreement(reference: str, candidate: str) -> float:
    a, b = reference.split(), candidate.split()
    if not a and not b:
        return 1.0
    shared = 0
    for x, y in zip(a, b):
        if x != y:
            break
        shared += 1
    return shared / max(len(a), len(b))


@dataclass
class Validation:
    tier: str
    quantization: str
    rows: list[dict]
    threshold: float

    @property
    def mean_agreement(self) -> float:
        return sum(r["agreement"] for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def exact_rate(self) -> float:
        return sum(r["exact"] for r in self.rows) / len(self.rows) if self.rows else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.rows) and self.mean_agreement >= self.threshold

    @property
    def validator(self) -> str:
        return f"quantisation:{self.tier}:{self.quantization}"

    def message(self) -> str:
        verdict = "accepted" if self.passed else "REFUSED"
        return (f"tier {self.tier!r} ({self.quantization}) {verdict}: mean agreement with full precision "
                f"{self.mean_agreement:.3f} (threshold {self.threshold:.2f}), identical answers "
                f"{self.exact_rate:.0%} of {len(self.rows)} sampled rows")


def reference_tier(tier: Tier) -> Tier:
    """The same model unquantised, at full precision."""
    return tier.model_copy(update={"quantization": None, "dtype": "float32"})


def compare(sample: list[Request], reference: list, candidate: list, tier: Tier, threshold: float) -> Validation:
    rows = []
    for req, ref, cand in zip(sample, reference, candidate, strict=True):
        r_text, c_text = ref.text or "", cand.text or ""
        rows.append({
            "row_id": req.row_id,
            "exact": r_text == c_text,
            "agreement": agreement(r_text, c_text) if ref.ok and cand.ok else 0.0,
            "reference": r_text,
            "candidate": c_text,
        })
    return Validation(tier.name, tier.quantization or "none", rows, threshold)


def validate_quantised_tier(tier: Tier, sample: list[Request], data_dir: str = "data",
                            threshold: float = 0.6) -> Validation:
    """Answer the sample with the full-precision reference, then with the quantised tier (one engine at a time)."""
    from models.backends import make_backend, release_engines

    if not tier.quantization:
        raise ValueError(f"tier {tier.name!r} is not quantised: nothing to validate")
    reference = make_backend(reference_tier(tier), data_dir).complete(sample).completions
    release_engines()
    candidate = make_backend(tier, data_dir).complete(sample).completions
    return compare(sample, reference, candidate, tier, threshold)


def land_validation(warehouse: str | Path, run_id: str, v: Validation) -> None:
    from sluice.warehouse.db import connect

    now = datetime.now(timezone.utc)
    with connect(warehouse) as con:
        con.execute("DELETE FROM validations WHERE run_id = ? AND validator = ?", [run_id, v.validator])
        con.executemany(
            "INSERT INTO validations (run_id, row_id, validator, passed, score, detail, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [[run_id, r["row_id"], v.validator, v.passed, r["agreement"],
              json.dumps({"exact": r["exact"], "reference": r["reference"], "candidate": r["candidate"]}), now]
             for r in v.rows],
        )
