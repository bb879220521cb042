"""Answer checks as a confidence: a logistic model over `cascade.answer_signals` of an answer, trained on answers
whose correctness is known (graded rows, or cheap answers judged against premium ones), that estimates the
probability an answer is wrong. The cascade uses 1 - that as the confidence of tiers that report no token logprobs
(API tiers without logprobs, replayed answers), so they are escalated by what their answers show, not only when
they fail a schema.

Trained with the questions too (`prompts`), it adds the checks of the answer against its question
(`sluice.stages.review.checks`: unused given numbers, invented operands, a copied quantity as the final answer). On
GSM8K (Mixtral-8x7B answers graded against the references, 5-fold out of fold) the answer checks alone predict a
wrong answer with AUROC 0.76, with the question checks 0.78, with the re-computed steps too
(`sluice.stages.review.steps`) about 0.80 (`bench/results/cascade_signals.md`). The checks a verifier was trained on
are saved with it by name, so one trained on fewer checks (answers alone, or before the step checks existed) keeps
working: it computes only the checks it knows.

The l2 penalty, unless given, is chosen inside the training rows (5-fold cross-validated log-loss over `L2_GRID`),
so a verifier scored on held-out rows saw nothing of them.

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
from sluice.stages.review.steps import STEP_SIGNALS, step_signals
from sluice.stats import fit_logistic

FILE = "verifier.json"
# every check a verifier can read, by block: (names, the function computing them, whether it needs the question)
BLOCKS = [(ANSWER_SIGNALS, lambda prompts, responses: answer_signals(responses), False),
          (QUESTION_SIGNALS, question_signals, True),
          (STEP_SIGNALS, step_signals, True)]
ALL_SIGNALS = [name for names, _, _ in BLOCKS for name in names]
WITH_QUESTIONS = ANSWER_SIGNALS + QUESTION_SIGNALS + STEP_SIGNALS
L2_GRID = (1.0, 3.0, 10.0, 30.0, 100.0)


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
        return any(name not in ANSWER_SIGNALS for name in self.signals)

    def p_wrong(self, responses: Sequence[str | None], prompts: Sequence[str | None] | None = None) -> np.ndarray:
        """Estimated probability that each answer is wrong (`prompts`: the questions, when it was trained on them)."""
        if self.reads_questions and prompts is None:
            raise ValueError("this verifier checks answers against their questions: give the prompts")
        x = (_signals(responses, prompts, self.signals) - self.mean) / self.scale
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


def _signals(responses: Sequence[str | None], prompts: Sequence[str | None] | None,
             signals: Sequence[str]) -> np.ndarray:
    """The named checks of each answer, in the order named (only the blocks they come from are computed)."""
    cols, names = [], []
    for block, compute, needs_question in BLOCKS:
        if any(name in signals for name in block):
            cols.append(compute(prompts if needs_question else None, responses))
            names += block
    x = np.hstack(cols) if cols else np.zeros((len(responses), 0))
    return x[:, [names.index(name) for name in signals]]


def _fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    w, b = fit_logistic((x - mean) / scale, y.astype(np.float64), l2=l2)
    return mean, scale, w, b


def choose_l2(x: np.ndarray, y: np.ndarray, grid: Sequence[float] = L2_GRID, folds: int = 5, seed: int = 0) -> float:
    """The l2 penalty with the lowest cross-validated log-loss on these rows alone (`y`: wrong). Rows are dealt to
    folds class by class, so every fold holds both kinds; with too few of either kind, 10."""
    n_min = min(int(y.sum()), int((~y).sum()))
    if n_min < 2 * folds:
        return 10.0
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=int)
    for kind in (True, False):
        idx = np.nonzero(y == kind)[0]
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    losses = []
    for l2 in grid:
        loss = 0.0
        for k in range(folds):
            tr, te = fold != k, fold == k
            mean, scale, w, b = _fit(x[tr], y[tr], l2)
            z = np.clip(((x[te] - mean) / scale) @ w + b, -30, 30)
            loss += float(np.sum(np.logaddexp(0.0, np.where(y[te], -z, z))))
        losses.append(loss)
    return float(grid[int(np.argmin(losses))])


def train_verifier(responses: Sequence[str | None], correct: Sequence[bool], l2: float | None = None,
                   prompts: Sequence[str | None] | None = None,
                   signals: Sequence[str] | None = None) -> AnswerVerifier:
    """Fit on answers with known correctness (both kinds must be present); with `prompts`, on the checks against
    the question and the re-computed steps too (then it needs the questions to score). `signals`: train on these
    checks only (names from `ALL_SIGNALS`); `l2`: None chooses it on these rows (`choose_l2`)."""
    y = ~np.asarray(correct, dtype=bool)
    if len(y) < 10 or y.all() or not y.any():
        raise ValueError(f"a verifier needs right and wrong answers: got {int((~y).sum())} right, {int(y.sum())} "
                         "wrong (at least 10 in all)")
    names = list(signals) if signals is not None else (WITH_QUESTIONS if prompts is not None else ANSWER_SIGNALS)
    unknown = [name for name in names if name not in ALL_SIGNALS]
    if unknown:
        raise ValueError(f"unknown answer checks {unknown} (known: {ALL_SIGNALS})")
    if prompts is None and any(name not in ANSWER_SIGNALS for name in names):
        raise ValueError("checks against the question need the prompts")
    x = _signals(responses, prompts, names)
    trained_on: dict = {"rows": int(len(y)), "wrong": int(y.sum())}
    if l2 is None:
        l2 = choose_l2(x, y)
        trained_on["l2_chosen_from"] = list(L2_GRID)
    mean, scale, w, b = _fit(x, y, l2)
    return AnswerVerifier(mean, scale, w, b, float(l2), trained_on, list(names))


def load_verifier(path: str | Path) -> AnswerVerifier:
    """From `verifier.json`, or a folder holding one (a router's)."""
    path = Path(path)
    if path.is_dir():
        path = path / FILE
    meta = json.loads(path.read_text())
    signals = meta.get("signals")
    if not signals or any(name not in ALL_SIGNALS for name in signals) or len(signals) != len(meta["weights"]):
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
