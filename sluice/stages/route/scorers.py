"""Scorers: how likely each prompt needs the premium tier (RouteLLM's router interface).

A scorer is one method, `score(prompts) -> (scores, reasons)`: scores in [0, 1] (higher: a stronger tier is
needed) and a short reason per row. Routing is then a policy over the scores (`sluice.stages.route.policies`:
thresholds, a share calibrated on the batch, or a dollar budget), so a new router is one class here.

    GatekeeperScorer   the heuristic gatekeeper's complexity score (`gatekeeper.py`); no training needed
    LearnedRouter      logistic heads over text features and MiniLM embeddings (`learned.py`), trained on labels
    KnnRouter          the nearest labelled prompts by MiniLM embedding (`knn.py`)
    PerTierRouter      one quality predictor per tier (`per_tier.py`)
A trained router becomes a scorer with its `as_scorer()`; `learned.load_router` reads any kind from its folder.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import polars as pl

from sluice.stages.route.gatekeeper import gatekeeper_features
from sluice.stages.route.learned import LearnedRouter, LearnedScorer


class Scorer(Protocol):
    source: str  # names the scorer in `route_reason`
    label: str  # what its score means, in `route_reason`

    def score(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]: ...


class GatekeeperScorer:
    source, label = "heuristic", "score"

    def score(self, prompts: pl.Series) -> tuple[np.ndarray, list[str]]:
        feats = gatekeeper_features(prompts)
        return (feats["route_score"].to_numpy().astype(np.float64),
                [f"intent={i}" for i in feats["intent"].to_list()])


def scorer_for(router: "Scorer | LearnedRouter | None") -> Scorer:
    """The heuristic gatekeeper when no router is given; a trained router (any kind) as its scorer; any other
    `Scorer` as it is."""
    if router is None:
        return GatekeeperScorer()
    if isinstance(router, LearnedRouter):
        return LearnedScorer(router)
    as_scorer = getattr(router, "as_scorer", None)
    return as_scorer() if callable(as_scorer) else router
