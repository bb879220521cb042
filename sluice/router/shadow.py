"""Shadow sampling: a small, deterministic share of cheap-tier rows is also answered by the premium tier.

Comparing the two answers (agreement, or a judge) gives fresh `cheap_ok` labels from the batch's own traffic, so
the router can be retrained and recalibrated every night (`sluice router train --from-warehouse`).

The sample is the `round(share x rows)` rows with the smallest hash of (salt, row_id): the same rows for the same
batch every time (a retried run shadows the same rows, paid once), the right size exactly, and uncorrelated with
the router's score or the row's position.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING
from typing import Sequence

import numpy as np

if TYPE_CHECKING:
    import polars as pl


def row_hash(row_id: str, salt: str = "") -> int:
    return int.from_bytes(hashlib.blake2b(f"{salt}\x1f{row_id}".encode(), digest_size=8).digest(), "big")


def shadow_sample(row_ids: Sequence[str], share: float, salt: str = "sluice-shadow") -> np.ndarray:
    """Boolean mask over `row_ids`: True for the rows to also answer on the premium tier."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"shadow share must be in [0, 1], got {share}")
    n = len(row_ids)
    k = int(round(share * n))
    mask = np.zeros(n, dtype=bool)
    if k:
        hashes = np.array([row_hash(str(r), salt) for r in row_ids], dtype=np.uint64)
        mask[np.lexsort((np.arange(n), hashes))[:k]] = True
    return mask


def _final_number(text: str) -> str | None:
    import re

    nums = re.findall(r"-?\d[\d,]*\.?\d*", text or "")
    return nums[-1].replace(",", "").rstrip(".") if nums else None


def answers_agree(cheap: str | None, premium: str | None) -> bool:
    """The cheap answer agrees with the premium one: equal up to case and whitespace, or, for answers ending in a
    number, the same final number (the premium answer is the reference; a judge can replace this check)."""
    a, b = " ".join((cheap or "").lower().split()), " ".join((premium or "").lower().split())
    if not a or not b:
        return False
    if a == b:
        return True
    na, nb = _final_number(a), _final_number(b)
    if na is None or nb is None:
        return False
    try:
        return abs(float(na) - float(nb)) < 1e-9
    except ValueError:
        return na == nb


def labels_from_shadow(pairs: "pl.DataFrame") -> "pl.DataFrame":
    """`router_training` rows from shadow pairs (run_id, row_id, prompt, cheap_response, premium_response):
    cheap_ok is their agreement, premium_ok unknown (premium is the reference), source 'shadow'."""
    import polars as pl

    ok = [answers_agree(c, p) for c, p in zip(pairs["cheap_response"].to_list(), pairs["premium_response"].to_list())]
    return pairs.select("run_id", "row_id", "prompt").with_columns(
        pl.Series("cheap_ok", ok, dtype=pl.Boolean), pl.lit(None, pl.Boolean).alias("premium_ok"),
        pl.lit("shadow").alias("source"))
