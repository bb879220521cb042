"""The team's own verdicts on reused answers, read from the warehouse as labels for the calibration
(`sluice.stages.dedup.calibrate`, set "team_reuses", rate: wrong reuses / reuses).

Two sources, both from earlier runs:

    checked clusters   the verdicts of `sluice.stages.dedup.verify` (a member's own answer against the one it
                       would have reused), recorded in runs.billing -> 'dedup' -> 'checks' -> 'verdicts'
    graded duplicates  a near or semantic duplicate with a reference (results.correct) whose canonical row
                       was graded correct: the reused answer was right for the canonical's question, so whether
                       it is right for the duplicate's says whether the reuse was. Pairs whose canonical answer
                       was wrong say nothing about the reuse and are left out.

Near duplicates have no MiniLM cosine: they count under every rule (other_hit). A semantic duplicate carries its
run's dup_score: under a learned rule the pair score (`sluice.stages.dedup.pair_score`), on which the next run's
threshold is chosen; it stays comparable while the shipped calibration file, and so the fitted score, is the same.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sluice.stages.dedup.calibrate import LabelledPairs, empty_pairs

TEAM_SET = "team_reuses"


def _pairs(rows: list[tuple[int, str, float | None, bool]]) -> LabelledPairs:
    if not rows:
        return empty_pairs()
    words, kinds, scores, ok = zip(*rows)
    semantic = np.array([k == "semantic" for k in kinds])
    cosine = np.where(semantic, np.array([math.nan if s is None else s for s in scores], float), math.nan)
    return LabelledPairs(np.full(len(rows), TEAM_SET, object), np.array(words, int), cosine, ~semantic,
                         np.zeros(len(rows), bool), np.array(ok, bool), metric={TEAM_SET: "reuses"})


def team_verdicts(warehouse: str | Path | None) -> LabelledPairs:
    """Every verdict on a reused answer the warehouse holds (module docstring); none without a warehouse."""
    if warehouse is None or not Path(warehouse).is_file():
        return empty_pairs()
    from sluice.warehouse.db import connect

    rows: list[tuple[int, str, float | None, bool]] = []
    with connect(warehouse, read_only=True) as con:
        tables = {t[0] for t in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if not {"results", "runs"} <= tables:
            return empty_pairs()
        for (billing,) in con.execute("SELECT billing FROM runs WHERE billing IS NOT NULL").fetchall():
            checks = (json.loads(billing) if isinstance(billing, str) else billing or {}).get("dedup", {})
            for words, kind, score, ok in (checks.get("checks") or {}).get("verdicts", []):
                rows.append((int(words), kind, score, bool(ok)))
        graded = con.execute("""
            SELECT greatest(len(string_split(trim(d.prompt), ' ')), len(string_split(trim(c.prompt), ' '))),
                   d.dup_kind, d.dup_score, d.correct
            FROM results d JOIN results c
              ON c.run_id = d.run_id AND c.row_id = d.dup_of
            WHERE d.status = 'duplicate' AND d.dup_kind IN ('near', 'semantic')
              AND d.correct IS NOT NULL AND c.correct
        """).fetchall()
    rows += [(int(w), k, s, bool(ok)) for w, k, s, ok in graded]
    return _pairs(rows)
