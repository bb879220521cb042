import pytest

from sluice.stages.dedup.guards import GUARDS, guard_flags, text_facts, veto_reason

PAIRS = [
    ("What is 2+2?", "What is 2+3?"),
    ("Can I enable dark mode?", "Can I disable dark mode?"),
    ("Is coffee good for you?", "Is coffee not good for you?"),
    ("Best hotels in Texas", "Best hotels in Ohio"),
    ("flights from paris to rome cheap", "cheap rome flights from paris to"),
    ("How do I remove blackheads?", "How do I remove blackheads and whiteheads?"),
    ("How can I lose weight fast?", "What is the fastest way to lose weight?"),
    ("How can I lose weight fast?", "How can I lose weight fast?"),
]


@pytest.mark.parametrize("a, b", PAIRS)
def test_flags_hold_every_verdict_and_the_first_one_is_the_veto_reason(a, b):
    fa, fb = text_facts(a), text_facts(b)
    flags = guard_flags(fa, fb)
    assert tuple(flags) == GUARDS
    raised = [g for g in GUARDS if flags[g]]
    assert veto_reason(fa, fb) == (raised[0] if raised else None)


def test_each_content_check_is_seen_by_its_own_flag():
    flags = [guard_flags(text_facts(a), text_facts(b)) for a, b in PAIRS]
    assert flags[0]["numbers differ"] and flags[1]["polarity differs"] and flags[2]["negation differs"]
    assert flags[3]["named entity differs"] and flags[5]["a qualifier is added or swapped"]
    assert not any(flags[7].values())
