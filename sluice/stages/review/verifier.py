"""Answer checks as a confidence: a logistic model over `cascade.answer_signals` of an answer, trained on answers
whose correctness is known (graded rows, or cheap answers judged against premium ones), that estimates the
probability an answer is wrong. The cascade uses 1 - that as the confidence of tiers that report no token logprobs
(API tiers without logprobs, replayed answers), so they are escalated by what their answers show, not only when
they fail a schema.

On GSM8K (Mixtral-8x7B answers, 5-fold out of fold) the answer checks alone predict a wrong answer with AUROC
0.75, the prompt's text features 0.60, both 0.77 (`bench/results/cascade_signals.md`): the verifier reads only the
answer, so it stays inside the review stage.

Saved as `verifier.json` (weights in the open) beside a router (`sluice router train` writes it when the labels
carry the cheap answer), or anywhere `RouterSettings.verifier` points.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sluice.stages.review.cascade import ANSWER_SIGNALS, answer_signals
from sluice.stats import fit_logistic

FILE = "verifier.json"


@dataclass
class AnswerVerifier:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    l2: float
    trained_on: dict = field(default_factory=dict)

    def p_wrong(self, responses: Sequence[str | None]) -> np.ndarray:
        """Estimated probability that each answer is wrong."""
        x = (answer_signals(responses) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(x @ self.weights + self.bias, -30, 30)))

    def confidence(self, responses: Sequence[str | None]) -> np.ndarray:
        return 1.0 - self.p_wrong(responses)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "kind": "answer-checks-logistic", "signals": ANSWER_SIGNALS, "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "weights": self.weights.tolist(), "bias": self.bias, "l2": self.l2,
            "trained_on": self.trained_on}, indent=2) + "\n")
        return path


def train_verifier(responses: Sequence[str | None], correct: Sequence[bool], l2: float = 10.0) -> AnswerVerifier:
    """Fit on answers with known correctness (both kinds must be present)."""
    y = ~np.asarray(correct, dtype=bool)
    if len(y) < 10 or y.all() or not y.any():
        raise ValueError(f"a verifier needs right and wrong answers: got {int((~y).sum())} right, {int(y.sum())} "
                         "wrong (at least 10 in all)")
    x = answer_signals(responses)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y.astype(np.float64), l2=l2)
    return AnswerVerifier(mean, scale, w, b, l2, {"rows": int(len(y)), "wrong": int(y.sum())})


def load_verifier(path: str | Path) -> AnswerVerifier:
    """From `verifier.json`, or a folder holding one (a router's)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    meta = json.loads(path.read_text())
    if meta.get("signals") != ANSWER_SIGNALS:
        raise ValueError(f"{path}: trained on other answer signals ({meta.get('signals')}); retrain it")
    return AnswerVerifier(np.array(meta["mean"]), np.array(meta["scale"]), np.array(meta["weights"]),
                          float(meta["bias"]), float(meta["l2"]), meta.get("trained_on", {}))


def find_verifier(verifier: Path | None, router: Path | None) -> AnswerVerifier | None:
    """The verifier the settings name, else the one saved beside the router, else None."""
    if verifier is not None:
        return load_verifier(verifier)
    if router is not None and (Path(router) / FILE).is_file():
        return load_verifier(router)
    return None
