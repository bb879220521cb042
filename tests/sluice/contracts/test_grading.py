"""Reference grading (sluice.contracts.grading): every grader on a right, a wrong and a malformed answer, and on a
null reference; what `auto` picks; grader names."""

import pytest

from sluice.contracts.grading import GRADERS, check_grader, choice_letter, grade, parse_json_answer, resolve_grader
from sluice.contracts.shapes import RequestDefaults, ShapeError

# grader, reference, a right answer, a wrong answer, a malformed answer (and the reason it is wrong)
CASES = [
    ("number", "42", "The answer is 42.", "The answer is 41.", "I cannot say.", "no number in the answer"),
    ("choice", "B", "The answer is (B).", "Answer: C", "None of these look right.", "no option letter A-E"),
    ("exact", "Paris", "paris.", "Lyon", "", "no answer"),
    ("contains", "Paris", "The capital of France is Paris.", "It is Lyon.", "   ", "no answer"),
    ("json", '{"city": "Paris"}', '{"city": "Paris", "country": "France"}', '{"city": "Lyon"}',
     '{"city": "Paris"', "not valid JSON"),
]


@pytest.mark.parametrize("grader, reference, right, wrong, malformed, why", CASES, ids=[c[0] for c in CASES])
def test_each_grader_right_wrong_malformed_and_without_reference(grader, reference, right, wrong, malformed, why):
    assert grade(right, reference, grader) == (True, None)
    correct, reason = grade(wrong, reference, grader)
    assert correct is False and reason
    correct, reason = grade(malformed, reference, grader)
    assert correct is False and why in reason
    assert grade(None, reference, grader) == (False, "no answer")
    # no reference: not graded, whatever the answer
    assert grade(right, None, grader) == (None, None)
    assert grade(right, "  ", grader) == (None, None)
    # auto picks this grader from the reference's shape, with the same verdicts
    assert resolve_grader(reference, "auto") == (grader if grader != "contains" else "exact")


@pytest.mark.parametrize("answer, reference, expected", [
    ("#### 1,234", "1234", True),                      # GSM8K's final-answer marker, thousands commas
    ("so 2 + 3 = 5 ... #### 5", "5", True),            # the number after ####, not the last one before it
    ("It costs $1,234.50 in total.", "1234.5", True),  # $, commas, trailing zeros, a full stop after the number
    ("The temperature fell to -7 degrees", "-7", True),
    ("between 3-5 apples", "5", True),                 # a range's hyphen is not a minus sign
    ("3.0", "3", True),                                 # numerically, not as text
    ("about 50%", "50", True),
    ("Janet sells 9 eggs a day for $2: 18 dollars.", "16 - 3 - 4 = 9 eggs. 9 * 2 = 18\n#### 18", True),
    ("The answer is 42, from 50 - 8.", "42", True),   # "answer is" before a number beats the last number
    ("so x = \\boxed{1,200} dollars, for 3 items", "1200", True),
    ("The answer is that 7 came and 3 left", "3", True),  # not a number right after "answer is": the last one
    ("The answer is 41.", "42", False),
    ("model2 says", "2", False),                        # digits inside a word are not a number
])
def test_number_reads_the_answers_last_number(answer, reference, expected):
    assert grade(answer, reference, "number")[0] is expected


def test_number_says_what_it_expected_and_got():
    assert grade("that makes 1,001", "1000", "number") == (False, "expected 1000, got 1001")


@pytest.mark.parametrize("answer, letter", [
    ("(B)", "B"), ("B.", "B"), ("Answer: C", "C"), ("the answer is d.", "D"), ("The answer is **E**", "E"),
    ("I think (C) is right, not A", "C"), ("A good option is C.", "C"), ("A is correct", "A"),
    ("Option A is wrong; the answer is B", "B"), ("the answer is a dog", None), ("no letter here", None),
])
def test_choice_reads_the_option_letter(answer, letter):
    assert choice_letter(answer) == letter


def test_exact_normalises_case_whitespace_quotes_and_trailing_punctuation():
    assert grade('  "New   York City!" ', "new york city", "exact") == (True, None)
    assert grade("New York City, USA", "new york city", "exact")[0] is False


def test_contains_is_a_normalised_substring():
    assert grade("They met in NEW\nYORK last year", "New York.", "contains") == (True, None)
    assert grade("They met in Boston", "New York", "contains") == (False, "'New York' not found in the answer")


def test_json_compares_named_fields_or_the_whole_value():
    ref = '{"sentiment": "positive", "stars": 4}'
    assert grade('```json\n{"stars": 4.0, "sentiment": "positive", "topic": "x"}\n```', ref, "json") == (True, None)
    assert grade('Here you go: {"sentiment": "positive", "stars": 3}', ref, "json") == (
        False, "field 'stars': expected 4, got 3")
    assert grade('{"sentiment": "positive"}', ref, "json") == (False, "the answer: missing field 'stars'")
    assert grade('{"a": {"b": true}}', '{"a": {"b": 1}}', "json")[0] is False  # true is not 1
    assert grade('[1, 2, 3]', "[1, 2, 3]", "json") == (True, None)
    assert grade('[1, 3, 2]', "[1, 2, 3]", "json")[0] is False  # arrays compare in order
    assert grade('"positive"', '"positive"', "json") == (True, None)
    assert parse_json_answer("no json at all") == (None, "the answer is not valid JSON")


def test_a_reference_the_grader_cannot_use_leaves_the_row_ungraded_with_the_reason():
    assert grade("42", "forty-two", "number") == (None, "reference 'forty-two' holds no number")
    assert grade("B", "maybe", "choice") == (None, "reference 'maybe' is not an option letter A-E")
    assert grade("{}", "{oops", "json") == (None, "reference '{oops' is not valid JSON")


@pytest.mark.parametrize("reference, picked", [
    ("42", "number"), ("-3.5", "number"), ("$1,200", "number"), ("a long solution...\n#### 72", "number"),
    ("B", "choice"), ("(c)", "choice"), ("E.", "choice"),
    ('{"a": 1}', "json"), ("[1, 2]", "json"),
    ("Paris", "exact"), ("{not json", "exact"), ("42 apples", "exact"), ("AB", "exact"),
])
def test_auto_picks_from_the_references_shape(reference, picked):
    assert resolve_grader(reference, "auto") == resolve_grader(reference, None) == picked


def test_grader_names():
    assert GRADERS == ("auto", "exact", "number", "choice", "contains", "json")
    assert check_grader(" Number ") == "number" and check_grader(None) is None
    with pytest.raises(ValueError, match="grader 'fuzzy' is not one of auto, exact, number, choice, contains, json"):
        check_grader("fuzzy")
    assert RequestDefaults(grader="JSON").grader == "json"
    with pytest.raises(ShapeError, match="grader 'fuzzy'"):
        RequestDefaults(grader="fuzzy")


def test_grading_never_raises_on_odd_answers():
    odd = ["", "\x00\x01", "{" * 5000, "[" * 3000 + "1", "#### ", "$", "-", "1" * 5000, "(((B", "```json\n```"]
    for grader in GRADERS:
        for answer in odd:
            correct, reason = grade(answer, {"json": '{"a": 1}', "choice": "B"}.get(grader, "1"), grader)
            assert correct in (True, False) and (correct or reason)


def test_grading_stays_fast_on_long_hostile_answers():
    # whitespace runs between optional parts of a pattern once made matching polynomial (minutes per answer)
    import time

    hostile = ["answer" + " " * 50_000 + "x", "answer is " + " \t" * 50_000, "B" + " " * 50_000 + "x",
               "5" + " " * 50_000 + "x", "```" + " " * 50_000, "```" * 20_000, "1," * 50_000, "{" * 100_000,
               "A " * 50_000, "answer: " * 20_000, "#### " * 20_000]
    start = time.perf_counter()
    for answer in hostile:
        for grader in GRADERS:
            for reference in ("42", "B", '{"a": 1}', "Paris", answer):
                grade(answer, reference, grader)
    assert time.perf_counter() - start < 20
