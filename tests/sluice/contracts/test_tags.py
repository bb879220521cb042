"""Chargeback tags: what a key and a value may be, `--tag KEY=VALUE`, and the run's tags overlaid by a row's."""

import pytest

from sluice.contracts.tags import TagError, check_tags, overlay, parse_tags, tag_value


def test_tags_are_sorted_strings_and_a_null_value_drops_its_key():
    assert check_tags({"team": "search", "cost-centre": "4711", "gone": None}) == {"cost-centre": "4711",
                                                                                   "team": "search"}
    assert check_tags([("a", "1"), ("b", "2")]) == {"a": "1", "b": "2"}  # an Arrow map's pairs


@pytest.mark.parametrize("tags, reason", [
    ({"team": 5}, "tag 'team' must be a string, got int 5"),
    ({"": "x"}, "tag key '' is not 1-64 letters"),
    ({"a b": "x"}, "tag key 'a b' is not"),
    ({"k" * 65: "x"}, "is not 1-64 letters"),
    ({"team": ""}, "tag 'team': value '' must be 1-256 characters"),
    ({"team": "a\nb"}, "without control characters"),
    ({"team": "x" * 257}, "must be 1-256 characters"),
    ([("a", "1"), ("a", "2")], "tag 'a' is given twice"),
    ({f"k{i}": "v" for i in range(33)}, "33 tags, at most 32"),
    (["a"], "tags must be an object of string keys and values, got list"),
])
def test_a_bad_tag_says_why(tags, reason):
    with pytest.raises(TagError, match=None) as exc:
        check_tags(tags)
    assert reason in str(exc.value)


def test_tag_options_and_cells():
    assert parse_tags(["team=search", "project = x=y"]) == {"project": "x=y", "team": "search"}
    for bad, reason in (["team"], "is not KEY=VALUE"), (["a=1", "a=2"], "given twice"):
        with pytest.raises(TagError, match=reason):
            parse_tags(bad)
    assert tag_value('{"team": "ads"}') == {"team": "ads"} and tag_value("  ") == {}
    assert tag_value(b'{"team": "ads"}') == {"team": "ads"}
    with pytest.raises(TagError, match="not a JSON object"):
        tag_value("team=ads")
    with pytest.raises(TagError, match="got list"):
        tag_value('["team"]')


def test_a_rows_own_tags_win_over_the_runs():
    assert overlay({"team": "search", "project": "x"}, '{"team": "ads"}') == '{"project": "x", "team": "ads"}'
    assert overlay({}, None) is None and overlay(None, '{"a": "1"}') == '{"a": "1"}'
