"""sluice/stats.py: the Wilson interval the quality estimate reports (sluice/stages/land/estimate.py)."""

import math

import numpy as np
import pytest

from sluice.stats import wilson_interval


# (p, n) where the interval's exact coverage is close to 95% (it oscillates with n and p, from 0.93 to 0.97)
@pytest.mark.parametrize("p, n", [(0.5, 200), (0.6, 100), (0.7, 40), (0.8, 50), (0.9, 200)])
def test_wilson_interval_covers_the_true_agreement_about_95_percent_of_the_time(p, n):
    rng = np.random.default_rng(17)
    samples = rng.binomial(n, p, size=1000)  # 1,000 simulated shadow samples of n judged pairs each
    covered = 0
    for k in samples:
        low, high = wilson_interval(int(k), n)
        covered += low <= p <= high
    assert 0.93 <= covered / 1000 <= 0.97


def test_wilson_interval_edges():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    low, high = wilson_interval(40, 40)  # every pair acceptable: the upper bound is 1, the lower one is not
    assert high == 1.0 and 0.9 < low < 1.0
    low, high = wilson_interval(0, 40)
    assert low == 0.0 and 0.0 < high < 0.1
    low, high = wilson_interval(33, 40)
    assert low < 33 / 40 < high and high - low < 0.25
    # more pairs, a narrower interval around the same share
    assert np.subtract(*wilson_interval(330, 400)[::-1]) < np.subtract(*wilson_interval(33, 40)[::-1])
