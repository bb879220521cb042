"""Answer checks as a confidence: a logistic model over `cascade.answer_signals` of an answer, trained on answers
whose correctness is known (graded rows, or cheap answers judged against premium ones), that estimates the
probability an answer is wrong. The cascade uses 1 - that as the confidence of tiers that report no token logprobs
(API tiers without logprobs, replayed answers), so they are escalated by what their answers show, not only when
they fail a schema.

Trained with the questions too (`prompts`), it adds the checks of the answer against its question
(`sluice.stages.review.checks`: unused given numbers, invented operands, a copied quantity as the final answer). On
GSM8K (Mixtral-8x7B answers graded against the references, 5-fold out of fold) the answer checks alone predict a
wrong answer with AUROC 0.76, with the question checks 0.78 (`bench/results/cascade_signals.md`). The checks a
verifier was trained on are saved with it, so one trained on answers alone keeps working.

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
from sluice.stages.review.checks import QUESTION_SIGNALS, question_signals
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
    signals: list[str] = field(default_factory=lambda: list(ANSWER_SIGNALS))

    @property
    def reads_questions(self) -> bool:
        return self.signals != ANSWER_SIGNALS

    def p_wrong(self, responses: Sequence[str | None], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        """Estimated probability that each answer is wrong (`prompts`: the questions, when it was trained on them)."""
        if self.reads_questions and prompts is None:
            raise ValueError("this verifier checks answers against their questions: give the prompts")
        x = (_signals(responses, prompts if self.reads_questions else None) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-np.clip(x @ self.weights + self.bias, -30, 30)))

    def confidence(self, responses: Sequence[str | None], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        return 1.0 - self.p_wrong(responses, prompts)

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({
            "kind": "answer-checks-logistic", "signals": self.signals, "mean": self.mean.tolist(),
            "scale": self.scale.tolist(), "weights": self.weights.tolist(), "bias": self.bias, "l2": self.l2,
            "trained_on": self.trained_on}, indent=2) + "\n")
        return path


def _signals(responses: Sequence[str | None], prompts: Sequence[str | None] | None) -> np.ndarray:
    x = answer_signals(responses)
    return x if prompts is None else np.hstack([x, question_signals(prompts, responses)])


def train_verifier(responses: Sequence[str | None], correct: Sequence[bool], l2: float = 10.0,
                   prompts: Sequence[str | None] | None = None) -> AnswerVerifier:
    """Fit on answers with known correctness (both kinds must be present); with `prompts`, on the checks against
    the question too (then it needs the questions to score)."""
    y = ~np.asarray(correct, dtype=bool)
    if len(y) < 10 or y.all() or not y.any():
        raise ValueError(f"a verifier needs right and wrong answers: got {int((~y).sum())} right, {int(y.sum())} "
                         "wrong (at least 10 in all)")
    x = _signals(responses, prompts)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y.astype(np.float64), l2=l2)
    names = ANSWER_SIGNALS + (QUESTION_SIGNALS if prompts is not None else [])
    return AnswerVerifier(mean, scale, w, b, l2, {"rows": int(len(y)), "wrong": int(y.sum())}, list(names))


def load_verifier(path: str | Path) -> AnswerVerifier:
    """From `verifier.json`, or a folder holding one (a router's)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    meta = json.loads(path.read_text())
    signals = meta.get("signals")
    if signals not in (ANSWER_SIGNALS, ANSWER_SIGNALS + QUESTION_SIGNALS):
        raise ValueError(f"{path}: trained on other answer signals ({signals}); retrain it")
    return AnswerVerifier(np.array(meta["mean"]), np.array(meta["scale"]), np.array(meta["weights"]),
                          float(meta["bias"]), float(meta["l2"]), meta.get("trained_on", {}), list(signals))


def find_verifier(verifier: Path | None, router: Path | None) -> AnswerVerifier | None:
    """The verifier the settings name, else the one saved beside the router, else None."""
    if verifier is not None:
        return load_verifier(verifier)
    if router is not None and (Path(router) / FILE).is_file():
        return load_verifier(router)
    return None
