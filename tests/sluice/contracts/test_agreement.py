"""Shape comparison of shadow pairs (sluice/contracts/agreement.py): numbers, option letters, JSON values under the
row's schema; free text is left to a judge (None)."""

import json

import pytest

from sluice.contracts.agreement import answer_shape, compare_shapes, same_json
from sluice.contracts.answers import answers_agree

SCHEMA = json.dumps({"type": "object", "properties": {"sentiment": {"type": "string"}, "stars": {"type": "integer"}},
                     "required": ["sentiment", "stars"]})
CHOICES = json.dumps({"enum": ["positive", "negative", "neutral"]})


@pytest.mark.parametrize("cheap, premium, grader, acceptable", [
    ("So she pays $255 a month.", "Shiela will pay $255 each month.", "number", True),
    ("... #### 1,200", "The total is 1200.", "number", True),
    ("The answer is 42. Check: 6 x 7 = 42", "6 times 7 is 42", "number", True),
    ("She pays 250 a month.", "Shiela will pay $255 each month.", "number", False),
    ("I cannot tell.", "Shiela will pay $255 each month.", "number", False),
    (None, "255", None, False),
    ("42", "42.0", None, True),  # a bare number: the shape comes from the premium answer itself
    ("41", "42", None, False),
])
def test_numbers_compare_by_their_final_number(cheap, premium, grader, acceptable):
    verdict = compare_shapes(cheap, premium, grader=grader)
    assert verdict.shape == "number" and verdict.acceptable is acceptable
    assert (verdict.reason is None) is acceptable


@pytest.mark.parametrize("cheap, premium, grader, acceptable", [
    ("The answer is (B) because ...", "B", None, True),
    ("b.", "(B)", None, True),
    ("Option C seems right.", "B", None, False),
    ("None of them.", "B", None, False),
    ("I pick B.", "After thinking it through, the answer is B.", "choice", True),
])
def test_option_letters_compare_by_letter(cheap, premium, grader, acceptable):
    verdict = compare_shapes(cheap, premium, grader=grader)
    assert verdict.shape == "choice" and verdict.acceptable is acceptable


def test_json_values_compare_parsed_under_the_schema():
    want = '{"sentiment": "positive", "stars": 5}'
    assert compare_shapes('```json\n{"stars": 5.0, "sentiment": "positive"}\n```', want, SCHEMA).acceptable is True
    differ = compare_shapes('{"sentiment": "positive", "stars": 4}', want, SCHEMA)
    assert differ.acceptable is False and differ.shape == "json"
    invalid = compare_shapes('{"sentiment": "positive"}', want, SCHEMA)  # misses a required field
    assert invalid.acceptable is False and "schema" in invalid.reason
    # a premium answer invalid under the schema is no yardstick: the pair is not judged
    assert compare_shapes(want, '{"stars": "many"}', SCHEMA).acceptable is None
    # a choice list: plain label or JSON string, the same value
    assert compare_shapes("positive", '"positive"', CHOICES).acceptable is True
    assert compare_shapes("neutral", "positive", CHOICES).acceptable is False


def test_json_without_a_schema_by_grader_or_by_the_premium_answers_shape():
    assert compare_shapes('Here: {"a": [1, 2]}', '{"a": [1, 2.0]}').acceptable is True
    assert compare_shapes('{"a": [2, 1]}', '{"a": [1, 2]}').acceptable is False  # lists keep their order
    assert compare_shapes('{"a": 1, "b": 2}', '{"a": 1}').acceptable is False  # equal values, not a subset
    assert compare_shapes("no json here", '[true]', grader="json").acceptable is False


def test_json_equality_is_strict_about_types():
    assert same_json(1, 1.0) and not same_json(True, 1) and not same_json("1", 1)
    assert same_json({"a": {"b": [None]}}, {"a": {"b": [None]}}) and not same_json({"a": 1}, {"a": 1, "b": 2})


@pytest.mark.parametrize("cheap, premium", [
    ("Paris is the capital of France.", "The capital of France is Paris."),
    ("Paris.", "Paris."),  # equal free text is still not judged: judging must not depend on the verdict
    ("A short summary.", "A longer summary of the text."),
])
def test_free_text_needs_a_judge(cheap, premium):
    verdict = compare_shapes(cheap, premium)
    assert verdict.acceptable is None and verdict.shape is None and "judge" in verdict.reason
    assert answer_shape(premium) is None


def test_no_premium_answer_or_no_number_in_it_is_not_judged():
    assert compare_shapes("42", None, grader="number").acceptable is None
    assert compare_shapes("42", "   ").acceptable is None
    no_number = compare_shapes("42", "I do not know.", grader="number")
    assert no_number.acceptable is None and no_number.shape == "number"
    assert compare_shapes("B", "none of the options", grader="choice").acceptable is None


def test_answers_agree_is_unchanged():
    assert answers_agree("Paris.", "paris.") and not answers_agree("Paris.", "Lyon.")
    assert answers_agree("so 42", "the answer: 42") and not answers_agree(None, "42")
