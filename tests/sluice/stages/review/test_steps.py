"""Re-computed steps: arithmetic written with units, dollars, percentages and words, chains, the final line."""

import math

import numpy as np
import pytest

from sluice.stages.review.steps import STEP_SIGNALS, step_signals, worked_steps

QUESTION = "Janet's ducks lay 16 eggs per day. She eats three and bakes with 4. She sells the rest at $2 each."


def signals(answer: str, question: str = QUESTION) -> dict[str, float]:
    return dict(zip(STEP_SIGNALS, step_signals([question], [answer])[0]))


def stated(text: str) -> list[tuple[float, float]]:
    return [(a, b) for a, b, _ in worked_steps(text)]


def test_steps_with_dollars_units_percent_words_and_escaped_operators_are_read():
    assert stated("8 x $5 = $40") == [(40.0, 40.0)]
    assert stated("it took him 2 miles / 4 miles per hour = 0.5 hours") == [(0.5, 0.5)]
    assert stated("She saves 25% of 2,000 = 500 dollars") == [(500.0, 500.0)]
    assert stated("16 minus 3 is 13 eggs, and 9 times 2 is 18.") == [(13.0, 13.0), (18.0, 18.0)]
    assert stated("her salary is 1,150 \\* 50 = $57,500") == [(57500.0, 57500.0)]
    assert stated("($40 - $20) x 2 = $60") == [(40.0, 60.0)]


def test_chains_are_checked_link_by_link_and_restated_results_are_not_errors():
    assert stated("$2 * $2.00 + $8.00 + $1.00 = $6.00 + $8.00 + $1.00 = $15.00") == [(13.0, 15.0), (15.0, 15.0)]
    assert stated("12 + 43 + 15 + 4 + 22 = 96 ÷ 3 = 32") == [(96.0, 96.0), (32.0, 32.0)]


def test_algebra_and_restated_numbers_are_not_read_as_arithmetic():
    assert stated("7x + 11x = 162\n18x = 162\nx = 9") == []
    assert stated("So he has 13 eggs = 13 eggs left") == []


def test_an_answer_whose_steps_check_out():
    answer = ("She eats 3, so 16 - 3 = <<16-3=13>>13 eggs are left.\n13 - 4 = 9 eggs.\n"
              "She makes 9 * $2 = $<<9*2=18>>18.\n#### 18")
    s = signals(answer)
    assert s["steps_checked"] == 3  # an annotation and its written step are one step
    assert s["steps_wrong"] == s["any_step_wrong"] == s["final_not_last_step"] == s["final_unseen"] == 0
    assert s["given_numbers"] == 3 and s["steps_per_given_number"] == pytest.approx(3 / 4)
    assert s["answer_to_question_length"] == pytest.approx(math.log1p(len(answer)) - math.log1p(len(QUESTION)))


def test_wrong_rounded_and_converted_steps_are_told_apart():
    s = signals("He pays 1 / 3 = 0.33 per egg, 2 x 1 hour = 120 minutes, 16 - 3 = 12 eggs.\n#### 12")
    assert (s["steps_checked"], s["steps_wrong"], s["steps_rounded"], s["steps_unit_conversion"]) == (3, 1, 1, 1)
    assert s["any_step_wrong"] == 1
    bad = signals("<<16-3=12>>12 and <<12*2=x>>\n#### 24")
    assert bad["steps_wrong"] == 2  # an annotation that does not parse counts as wrong


def test_a_final_answer_that_does_not_follow_from_the_last_step():
    s = signals("16 - 3 - 4 = 9 eggs, 9 * 2 = 18.5 dollars.\n#### 18")
    assert s["final_not_last_step"] == 1 and s["final_off_by_rounding"] == 1  # rounded at the end
    s = signals("16 - 3 - 4 = 9 eggs.\n#### 42")
    assert s["final_not_last_step"] == 1 and s["final_off_by_rounding"] == 0 and s["final_unseen"] == 1


def test_a_cut_off_answer_is_truncated_and_a_finished_one_is_not():
    assert signals("For Job A, Nick would earn 15 x 2000 = $<<15*200")["truncated"] == 1
    assert signals("I cannot tell.")["truncated"] == 0
    assert signals("16 - 7 = 9\n#### 9")["truncated"] == 0


def test_empty_and_missing_answers_are_neutral():
    assert step_signals([None], [None]).shape == (1, len(STEP_SIGNALS))
    s = signals("", "What colour is the sky?")
    assert s["steps_checked"] == 0 and s["given_numbers"] == 0 and s["truncated"] == 1
    assert np.isfinite(list(s.values())).all()
    with pytest.raises(ValueError, match="2 prompts for 1 answers"):
        step_signals(["a", "b"], ["c"])
