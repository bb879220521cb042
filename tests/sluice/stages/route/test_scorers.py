"""The Scorer interface: the heuristic gatekeeper and the learned router score the same way, policies assign."""

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from sluice.config import RouterSettings
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.route.assign import learned_route
from sluice.stages.route.features import router_features
from sluice.stages.route.gatekeeper import gatekeeper_features
from sluice.stages.route.learned import LearnedScorer, train_router
from sluice.stages.route.policies import route_by_thresholds
from sluice.stages.route.scorers import GatekeeperScorer, scorer_for

PROMPTS = pl.Series(["hi there", "what is the capital of France?", "Write a polite reply to my landlord.",
                     "Prove that there are infinitely many primes, step by step.",
                     "Write a Python function implementing a lock-free queue and explain its correctness."])


def test_the_gatekeeper_scorer_is_the_heuristic_score_with_its_intent():
    scores, reasons = GatekeeperScorer().score(PROMPTS)
    feats = gatekeeper_features(PROMPTS)
    np.testing.assert_array_equal(scores, feats["route_score"].to_numpy())
    assert reasons == [f"intent={i}" for i in feats["intent"].to_list()]
    assert isinstance(scorer_for(None), GatekeeperScorer)


def test_a_learned_router_scores_through_the_same_interface():
    labels = pl.DataFrame({"prompt": PROMPTS.to_list() * 2, "cheap_ok": [True, True, True, False, False] * 2})
    router = train_router(labels, use_embeddings=False, l2_text=1.0)
    scorer = scorer_for(router)
    assert isinstance(scorer, LearnedScorer) and (scorer.source, scorer.label) == ("router", "p_premium")
    scores, reasons = scorer.score(PROMPTS)
    np.testing.assert_allclose(scores, router.score(PROMPTS))
    assert reasons == router.explain(router_features(PROMPTS, False))
    assert scores[3:].min() > scores[:2].max()


class FixedScorer:
    """A router is one class: anything with `source`, `label` and `score`."""

    source, label = "fixed", "p"

    def score(self, prompts):
        return np.linspace(0.0, 1.0, len(prompts)), ["fixed"] * len(prompts)


def test_any_scorer_routes_under_the_threshold_policy():
    rows = validate_prompts(pa.table({"prompt": PROMPTS.to_list()}))
    out = learned_route(rows, ["small", "mid", "premium"], RouterSettings(premium_share=None), FixedScorer())
    # scores 0, .25, .5, .75, 1 against the default thresholds 0.30 / 0.60
    assert out["tier"].to_pylist() == ["small", "small", "mid", "premium", "premium"]
    assert out["route_reason"].to_pylist()[0].startswith("fixed: p=0.00 [fixed] thresholds 0.3/0.6")


@pytest.mark.parametrize("n_tiers", [3, 4, 5])
def test_thresholds_send_low_scores_to_the_cheapest_and_high_to_the_last_tier(n_tiers):
    scores = np.array([0.0, 0.29, 0.30, 0.45, 0.59, 0.60, 1.0])
    idx = route_by_thresholds(scores, 0.30, 0.60, n_tiers)
    assert idx[:2].tolist() == [0, 0] and idx[-2:].tolist() == [n_tiers - 1] * 2
    middle = idx[2:5]
    assert ((middle >= 1) & (middle <= n_tiers - 2)).all()  # the band between goes to the middle tiers
    assert np.all(np.diff(idx) >= 0)
