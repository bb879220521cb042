"""Small statistics the stages share: a logistic fit, rank AUROC, and a binomial interval."""

from __future__ import annotations

import math

import numpy as np


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> tuple[np.ndarray, float]:
    """Weights and bias minimising mean log-loss + l2/(2n)·|w|² (the bias is not penalised); Newton steps."""
    n, d = x.shape
    xa = np.hstack([x, np.ones((n, 1))])
    w = np.zeros(d + 1)
    reg = np.full(d + 1, l2)
    reg[-1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xa @ w, -30, 30)))
        grad = xa.T @ (p - y) + reg * w
        hess = (xa * (p * (1 - p))[:, None]).T @ xa + np.diag(reg) + 1e-9 * np.eye(d + 1)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return w[:-1], float(w[-1])


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half): the Mann-Whitney U
    statistic over the average ranks. NaN when either class is empty."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def wilson_interval(successes: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (95% by default); (nan, nan) when n == 0."""
    if n == 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_difference_interval(only_a: int, only_b: int, both: int, neither: int,
                               z: float = 1.959963984540054) -> tuple[float, float, float]:
    """The difference of two proportions measured on the same items (A right minus B right), with its interval:
    Newcombe's (1998) method 10, built from the two Wilson intervals and the correlation of the pairs.

    The counts are the 2x2 table of the pairs: right on A only, on B only, on both, on neither. Pairing is what
    makes it narrow: a copy of a model that agrees with it everywhere gives an interval around 0 much tighter
    than two independent accuracies would. Returns (difference, low, high); nans when there are no pairs."""
    n = only_a + only_b + both + neither
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    a_right, b_right = both + only_a, both + only_b
    p1, p2 = a_right / n, b_right / n
    l1, u1 = wilson_interval(a_right, n, z)
    l2, u2 = wilson_interval(b_right, n, z)
    denom = (a_right * (n - a_right) * b_right * (n - b_right)) ** 0.5
    phi = (both * neither - only_a * only_b) / denom if denom else 0.0
    d_low = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    d_high = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    diff = p1 - p2
    return diff, max(-1.0, diff - d_low), min(1.0, diff + d_high)
