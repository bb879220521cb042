"""Choosing the semantic rule for a false-hit rate: planted labels, small sets, the team's verdicts, the shipped set."""

import numpy as np
import pytest

from sluice.stages.dedup.calibrate import (
    GRID,
    NEVER,
    LabelledPairs,
    Rule,
    calibration_settings,
    choose_rule,
    min_labels,
    read_calibration,
    upper_bound,
)
from sluice.stages.dedup.minhash import NearConfig
from sluice.stages.dedup.semantic import SemanticConfig


def planted(noise: float, n: int = 6000, seed: int = 0) -> LabelledPairs:
    """Half duplicates (cosine ~ U(0.85, 1)), half not (cosine ~ U(0.5, 0.95)); `noise` of the duplicates above
    0.9 labelled not duplicate (the label noise at the top of a ranking that QQP has)."""
    rng = np.random.default_rng(seed)
    label = np.arange(n) % 2 == 0
    cosine = np.where(label, rng.uniform(0.85, 1.0, n), rng.uniform(0.5, 0.95, n))
    flip = label & (cosine >= 0.9) & (rng.random(n) < noise)
    return LabelledPairs(np.full(n, "planted", object), np.full(n, 10), cosine, np.zeros(n, bool),
                         np.zeros(n, bool), label & ~flip, metric={"planted": "pairs"})


def test_noisier_labels_make_a_stricter_rule_and_each_rule_is_the_most_permissive_within_delta():
    clean, noisy = choose_rule(planted(0.0), 0.01), choose_rule(planted(0.03), 0.01)
    assert noisy.rule.thresholds[0] > clean.rule.thresholds[0]
    for cal, pairs in ((clean, planted(0.0)), (noisy, planted(0.03))):
        assert cal.bound <= 0.01
        t = cal.rule.thresholds[0]
        looser = GRID[GRID.index(t) + 1]  # the next rule in the sequence fails the bound
        hit = pairs.hits(Rule((looser,), (48,)))
        negatives = ~pairs.label
        assert upper_bound(int((hit & negatives).sum()), int(negatives.sum())) > 0.01


def test_a_larger_delta_never_chooses_a_stricter_rule():
    pairs = planted(0.02)
    chosen = [choose_rule(pairs, d).rule.thresholds[0] for d in (0.005, 0.01, 0.02, 0.05)]
    assert chosen == sorted(chosen, reverse=True)


def test_a_set_too_small_to_show_delta_is_reported_not_binding():
    big, small = planted(0.0), planted(0.0, n=200, seed=1)
    small.set_name[:] = "small"
    small.label[:] = False  # every pair a non-duplicate: its false hits would bind if it could
    pairs = LabelledPairs.concat([big, LabelledPairs(small.set_name, small.words, small.cosine, small.other_hit,
                                                     small.vetoed, small.label, {"small": "pairs"})])
    cal = choose_rule(pairs, 0.01)
    assert min_labels(0.01) == 368 > 200
    assert cal.binding_sets == ["planted"] and not cal.per_set["small"]["binding"]
    assert cal.rule.thresholds == choose_rule(big, 0.01).rule.thresholds


def test_a_few_verdicts_bind_once_the_set_could_show_delta():
    base = planted(0.0)
    n = 400
    cosine = np.linspace(0.90, 1.0, n)
    team = LabelledPairs(np.full(n, "team_reuses", object), np.full(n, 10), cosine, np.zeros(n, bool),
                         np.zeros(n, bool), cosine >= 0.99, metric={"team_reuses": "reuses"})
    # the 20 wrong reuses between 0.985 and 0.99 are 0.05 of the 400 checked: the rule stops at 0.99
    cal = choose_rule(LabelledPairs.concat([base, team]), 0.01)
    assert cal.rule.thresholds == (0.99,) and "team_reuses" in cal.binding_sets
    assert cal.per_set["team_reuses"]["errors"] == 0 and cal.per_set["team_reuses"]["n"] == n


def test_wrong_reuses_among_the_teams_verdicts_tighten_the_rule():
    base = planted(0.0)
    n = 3000
    cosine = np.linspace(0.9, 1.0, n)
    ok = cosine >= 0.97  # the team found reuses under 0.97 wrong
    team = LabelledPairs(np.full(n, "team_reuses", object), np.full(n, 10), cosine, np.zeros(n, bool),
                         np.zeros(n, bool), ok, metric={"team_reuses": "reuses"})
    cal = choose_rule(LabelledPairs.concat([base, team]), 0.01)
    assert cal.rule.thresholds[0] == 0.97 > choose_rule(base, 0.01).rule.thresholds[0]
    assert cal.per_set["team_reuses"]["upper"] <= 0.01


def test_no_rule_at_all_when_even_the_strictest_fails():
    pairs = planted(0.0)
    pairs.other_hit[~pairs.label] = True  # the near stage alone merges every non-duplicate
    cal = choose_rule(pairs, 0.01)
    assert cal.rule.thresholds == (NEVER,) and not cal.rule.char_shingles and cal.bound > 0.01


def test_length_buckets_each_get_a_threshold():
    pairs = planted(0.0)
    pairs.words[1::4] = 30
    cal = choose_rule(pairs, 0.02, edges=(16, 48))
    assert len(cal.rule.thresholds) == 2 and cal.bound <= 0.02
    assert list(cal.rule.threshold_for(np.array([5, 16, 17, 48]))) == [cal.rule.thresholds[0]] * 2 + \
        [cal.rule.thresholds[1]] * 2


def test_the_shipped_calibration_set_matches_the_stages_and_gives_a_rule_within_delta():
    settings = calibration_settings()
    near, semantic = NearConfig(), SemanticConfig()
    assert settings == {"near_threshold": near.threshold, "shingle_words": near.shingle_words,
                        "char_max_words": near.char_max_words, "char_shingle": near.char_shingle,
                        "semantic_max_words": semantic.max_words, "candidate_threshold": semantic.candidate_threshold,
                        "embedding": settings["embedding"]}
    pairs = read_calibration()
    assert len(pairs.label) > 15000
    assert {"qqp_tune", "mrpc_train", "stsb_train", "swaps", "edits"} <= set(pairs.set_name.tolist())
    cal = choose_rule(pairs, 0.01)
    assert cal.bound <= 0.01 and cal.rule.thresholds[0] < NEVER and cal.record()["met"]


def test_the_exact_upper_bound():
    assert upper_bound(0, 368) <= 0.01 < upper_bound(0, 367)  # 1 - 0.025 ** (1 / n)
    assert abs(upper_bound(0, 100) - (1 - 0.025 ** (1 / 100))) < 1e-9
    assert abs(upper_bound(0, 100, level=0.95) - (1 - 0.05 ** (1 / 100))) < 1e-9
    # 4 errors in 100: the two-sided exact 95% interval's upper end is 0.0993 (Clopper-Pearson tables)
    assert abs(upper_bound(4, 100) - 0.0993) < 5e-4
    assert upper_bound(16, 2897) > 16 / 2897 and upper_bound(3, 3) == 1.0


def test_character_shingles_come_off_when_their_merges_alone_break_delta():
    pairs = planted(0.0)
    negatives = np.flatnonzero(~pairs.label)
    pairs.near_chars[negatives[:60]] = True  # 60 of 3000 non-duplicates merged by character shingles
    cal = choose_rule(pairs, 0.01)
    assert not cal.rule.char_shingles and cal.rule.thresholds == (NEVER,)
    assert choose_rule(pairs, 0.05).rule.char_shingles


@pytest.mark.parametrize("delta", [0.0, 1.0])
def test_delta_must_be_a_rate(delta):
    with pytest.raises(ValueError):
        choose_rule(planted(0.0), delta)
