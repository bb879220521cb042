"""Answer checks as the cascade's confidence for tiers without logprobs."""

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from models.pricing import TierPrice
from sluice.config import RouterSettings
from sluice.stages.review.cascade import ANSWER_SIGNALS
from sluice.stages.review.checks import QUESTION_SIGNALS
from sluice.stages.review.decide import escalation_rows
from sluice.stages.review.verifier import choose_l2, find_verifier, load_verifier, train_verifier

RIGHT = ["She has 16 - 3 = 13 eggs, then 13 - 4 = 9, and 9 * 2 = 18.\n#### 18",
         "2 * 3 = 6 and 6 + 4 = 10.\nThe answer is 10", "5 + 5 = 10, 10 * 3 = 30.\n#### 30"]
WRONG = ["16 - 3 = 12 so 12 * 2 = 25. However, assuming half are left, approximately 12.5",
         "I think it is probably more than that but cannot say.", "3 * 4 = 13, so the answer is -2.5"]


def verifier():
    return train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12, l2=1.0)


def test_answers_that_do_not_check_out_are_less_trusted():
    v = verifier()
    conf = v.confidence(RIGHT + WRONG)
    assert conf[:3].min() > conf[3:].max()
    assert np.all((conf >= 0) & (conf <= 1))


def test_a_verifier_needs_both_kinds_of_answer():
    with pytest.raises(ValueError, match="right and wrong answers"):
        train_verifier(RIGHT * 5, [True] * 15)


def test_saved_beside_a_router_and_found_there(tmp_path):
    v = verifier()
    v.save(tmp_path / "router")
    again = find_verifier(None, tmp_path / "router")
    np.testing.assert_allclose(again.confidence(WRONG), v.confidence(WRONG))
    assert find_verifier(None, tmp_path / "elsewhere") is None
    assert load_verifier(tmp_path / "router" / "verifier.json").trained_on == {"rows": 24, "wrong": 12}


def test_tiers_without_logprobs_escalate_by_answer_checks():
    rows = pl.DataFrame({"row_id": [f"r{i}" for i in range(6)], "prompt": ["q"] * 6, "max_tokens": [64] * 6,
                         "tier": ["small"] * 6})
    answers = pl.DataFrame({"row_id": rows["row_id"], "status": ["ok"] * 6, "response": RIGHT + WRONG,
                            "error": [None] * 6, "mean_logprob": pl.Series([None] * 6, dtype=pl.Float64),
                            "input_tokens": [10] * 6, "output_tokens": [20] * 6})
    price = TierPrice("premium", 1e-6, 2e-6, "test")
    settings = RouterSettings(cascade_share=0.5, cascade_min_confidence=0.9)
    none, _ = escalation_rows(rows, answers, "small", "premium", price, settings, None)
    assert none.height == 0  # no logprobs and no verifier: no confidence, nothing escalated
    up, planned = escalation_rows(rows, answers, "small", "premium", price, settings, None, verifier())
    assert sorted(up["row_id"].to_list()) == ["r3", "r4", "r5"]
    assert planned == pytest.approx(3 * (10 * 1e-6 + 64 * 2e-6))


def test_router_train_writes_the_verifier_when_labels_carry_cheap_answers(tmp_path):
    from sluice.cli import app

    prompts = [f"Question {i}: how many apples are left if {i} of {i + 7} are eaten?" for i in range(24)]
    labels = pl.DataFrame({"prompt": prompts, "cheap_ok": [True] * 12 + [False] * 12,
                           "cheap_response": RIGHT * 4 + WRONG * 4})
    labels.write_parquet(tmp_path / "labels.parquet")
    res = CliRunner().invoke(app, ["router", "train", str(tmp_path / "labels.parquet"), "-o", str(tmp_path / "r"),
                                   "--no-embeddings"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "r" / "verifier.json").is_file() and "answer verifier trained on 24" in res.output


QUESTIONS = ["Janet's ducks lay 16 eggs; she eats 3 and bakes with 4, selling the rest at $2. How much?",
             "Two boxes of 3 and then 4 more: how many?", "Five plus 5, times 3?"]


def test_trained_on_questions_it_needs_them_and_keeps_what_it_read(tmp_path):
    v = train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12, l2=1.0, prompts=QUESTIONS * 8)
    assert v.reads_questions and len(v.signals) == len(v.weights) == 27  # answer, question and step checks
    conf = v.confidence(RIGHT + WRONG, QUESTIONS * 2)
    assert conf[:3].min() > conf[3:].max()
    with pytest.raises(ValueError, match="give the prompts"):
        v.confidence(RIGHT)
    v.save(tmp_path)
    again = load_verifier(tmp_path)
    assert again.signals == v.signals
    np.testing.assert_allclose(again.confidence(WRONG, QUESTIONS), v.confidence(WRONG, QUESTIONS))


def test_a_verifier_of_answers_alone_ignores_the_questions():
    v = verifier()
    assert not v.reads_questions
    np.testing.assert_allclose(v.confidence(WRONG, QUESTIONS), v.confidence(WRONG))


def test_escalation_gives_the_verifier_the_questions():
    v = train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12, l2=1.0, prompts=QUESTIONS * 8)
    rows = pl.DataFrame({"row_id": [f"r{i}" for i in range(6)], "prompt": QUESTIONS * 2, "max_tokens": [64] * 6,
                         "tier": ["small"] * 6})
    answers = pl.DataFrame({"row_id": rows["row_id"], "status": ["ok"] * 6, "response": RIGHT + WRONG,
                            "error": [None] * 6, "mean_logprob": pl.Series([None] * 6, dtype=pl.Float64),
                            "input_tokens": [10] * 6, "output_tokens": [20] * 6})
    settings = RouterSettings(cascade_share=0.5, cascade_min_confidence=0.9)
    up, _ = escalation_rows(rows, answers, "small", "premium", TierPrice("premium", 1e-6, 2e-6, "test"), settings,
                            None, v)
    assert sorted(up["row_id"].to_list()) == ["r3", "r4", "r5"]


def test_a_verifier_saved_before_the_step_checks_still_loads_and_scores(tmp_path):
    old = train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12, l2=1.0, prompts=QUESTIONS * 8,
                         signals=ANSWER_SIGNALS + QUESTION_SIGNALS)
    old.save(tmp_path)
    again = load_verifier(tmp_path)
    assert again.signals == ANSWER_SIGNALS + QUESTION_SIGNALS and len(again.weights) == 15
    np.testing.assert_allclose(again.confidence(RIGHT + WRONG, QUESTIONS * 2), old.confidence(RIGHT + WRONG,
                                                                                              QUESTIONS * 2))
    conf = again.confidence(RIGHT + WRONG, QUESTIONS * 2)
    assert conf[:3].min() > conf[3:].max()


def test_the_shipped_demo_verifier_loads():
    from pathlib import Path

    v = load_verifier(Path(__file__).resolve().parents[4] / "data" / "samples" / "gsm8k_router")
    assert v.reads_questions and len(v.signals) == len(v.weights)
    conf = v.confidence(RIGHT + WRONG, QUESTIONS * 2)
    assert np.all((conf >= 0) & (conf <= 1)) and conf[:3].mean() > conf[3:].mean()


def test_unknown_checks_are_refused_on_training_and_loading(tmp_path):
    with pytest.raises(ValueError, match="unknown answer checks"):
        train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12, signals=["calculations", "vibes"])
    with pytest.raises(ValueError, match="need the prompts"):
        train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12, signals=["steps_wrong"])
    v = verifier()
    path = v.save(tmp_path)
    meta = json.loads(path.read_text())
    meta["signals"][0] = "vibes"
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="retrain it"):
        load_verifier(tmp_path)


def test_l2_is_chosen_on_the_training_rows_alone():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 3))
    y = x[:, 0] + 0.3 * rng.normal(size=400) > 0  # one strong feature: little penalty fits best
    assert choose_l2(x, y) == 1.0
    noise = np.random.default_rng(1)
    assert choose_l2(noise.normal(size=(200, 60)), noise.random(200) < 0.5) == 100.0  # noise: the strongest wins
    assert choose_l2(x[:12], y[:12]) == 10.0  # too few rows of a kind for five folds: the default
    v = train_verifier(RIGHT * 4 + WRONG * 4, [True] * 12 + [False] * 12)  # separable: the least penalty
    assert v.l2 == 1.0 and v.trained_on["l2_chosen_from"] == [1.0, 3.0, 10.0, 30.0, 100.0]
