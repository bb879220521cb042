"""Checks of an answer against its question: unused given numbers, invented operands, a copied final answer."""

import numpy as np
import pytest

from sluice.stages.review.checks import QUESTION_SIGNALS, question_signals

QUESTION = "Janet's ducks lay 16 eggs per day. She eats three and bakes with 4. She sells the rest at $2 each."


def signals(answer: str, question: str = QUESTION) -> dict[str, float]:
    return dict(zip(QUESTION_SIGNALS, question_signals([question], [answer])[0]))


def test_an_answer_that_uses_every_given_number():
    s = signals("16 - 3 - 4 = 9 eggs are left, and 9 * 2 = 18 dollars.\n#### 18")
    assert s["question_numbers_unused"] == 0
    assert s["question_number_coverage"] == 1.0
    assert s["unsupported_operands"] == 0  # 3 is "three" in the question, 9 an earlier result
    assert s["final_in_question"] == 0
    assert s["final_magnitude"] == pytest.approx(np.log10(19))
    assert s["final_marks"] == 1


def test_an_answer_that_skips_a_quantity_and_invents_an_operand():
    s = signals("16 - 3 = 13 eggs, and 13 * 5 = 65.\n#### 65")
    assert s["question_numbers_unused"] == 2  # 4 and 2 never used
    assert s["question_number_coverage"] == pytest.approx(1 / 3)
    assert s["unsupported_operands"] == pytest.approx(1 / 4)  # 5 comes from nowhere


def test_a_copied_quantity_as_the_final_answer_and_repeated_markers():
    s = signals("She sells eggs. The answer is 16\n#### 16")
    assert s["final_in_question"] == 1 and s["final_marks"] == 2


def test_no_answer_and_no_numbers_are_neutral():
    s = signals("", "What colour is the sky?")
    assert s == {"question_numbers_unused": 0, "question_number_coverage": 1.0, "final_in_question": 0,
                 "final_magnitude": 0, "unsupported_operands": 0, "final_marks": 0}
    assert question_signals([None], [None]).shape == (1, len(QUESTION_SIGNALS))


def test_prompts_and_answers_must_pair_up():
    with pytest.raises(ValueError, match="2 prompts for 1 answers"):
        question_signals(["a", "b"], ["x"])
