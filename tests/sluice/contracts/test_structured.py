import json

from sluice.contracts.answers import top_level_fields, validate_answer
from sluice.contracts.shapes import schema_from_choices

SCHEMA = json.dumps({"type": "object", "required": ["label", "n"], "additionalProperties": False,
                     "properties": {"label": {"enum": ["a", "b"]}, "n": {"type": "integer"}, "tags": {"type": "array"}}})


def test_a_valid_answer_is_parsed_to_canonical_json():
    parsed, err = validate_answer('{"n": 3, "label": "a"}', SCHEMA)
    assert err is None and json.loads(parsed) == {"label": "a", "n": 3}
    assert validate_answer('```json\n{"label": "b", "n": 1}\n```', SCHEMA)[1] is None  # a fenced answer


def test_invalid_answers_say_why():
    assert "not valid JSON" in validate_answer('{"label": "a", "n": ', SCHEMA)[1]
    assert "at n" in validate_answer('{"label": "a", "n": "three"}', SCHEMA)[1]
    assert "'n' is a required property" in validate_answer('{"label": "a"}', SCHEMA)[1]
    assert validate_answer(None, SCHEMA) == (None, "no answer")


def test_choice_lists_accept_the_label_plain_or_quoted():
    choices = schema_from_choices("positive,negative")
    assert validate_answer(" positive\n", choices) == ('"positive"', None)
    assert validate_answer('"negative"', choices) == ('"negative"', None)
    assert "not one of the choices" in validate_answer("maybe", choices)[1]


def test_top_level_fields_get_duckdb_types():
    assert top_level_fields(SCHEMA) == {"label": "VARCHAR", "n": "BIGINT", "tags": "JSON"}
    assert top_level_fields(schema_from_choices("x,y")) == {"label": "VARCHAR"}
