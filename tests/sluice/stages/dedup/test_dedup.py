import pyarrow as pa

from sluice.stages.dedup.deduplicate import exact_duplicates
from sluice.stages.ingest.read import validate_prompts


def rows(prompts, systems=None, max_tokens=None):
    cols = {"prompt": prompts}
    if systems is not None:
        cols["system"] = systems
    if max_tokens is not None:
        cols["max_tokens"] = pa.array(max_tokens, pa.int32())
    return validate_prompts(pa.table(cols))


def test_case_and_whitespace_variants_point_at_the_first_row():
    out = exact_duplicates(rows(["What is 2+2?", "what is  2+2? ", "WHAT IS 2+2?", "What is 2+3?"]))
    assert out["status"].to_pylist() == ["pending", "duplicate", "duplicate", "pending"]
    assert out["dup_of"].to_pylist() == [None, "0", "0", None]
    assert out["dup_kind"].to_pylist() == [None, "exact", "exact", None]
    assert out["dup_score"].to_pylist() == [None, 1.0, 1.0, None]


def test_unicode_compatibility_forms_are_the_same_text():
    out = exact_duplicates(rows(["ﬁnd the ﬁle", "find the file"]))  # NFKC folds the ligature
    assert out["dup_of"].to_pylist() == [None, "0"]


def test_a_different_system_prompt_is_a_different_request():
    out = exact_duplicates(rows(["Summarise it.", "Summarise it.", "Summarise it."], ["Be brief.", None, "be brief."]))
    assert out["dup_of"].to_pylist() == [None, None, "0"]


def test_a_different_max_tokens_is_a_different_request():
    out = exact_duplicates(rows(["Tell a story."] * 3, max_tokens=[32, 64, None]), default_max_tokens=64)
    assert out["dup_of"].to_pylist() == [None, None, "1"]


def test_quarantined_rows_are_never_canonical_or_duplicates():
    out = exact_duplicates(rows([None, "hi", "hi"]))
    assert out["status"].to_pylist() == ["quarantined", "pending", "duplicate"]
    assert out["dup_of"].to_pylist() == [None, None, "1"]


def test_sampled_rows_are_never_duplicates_unless_the_run_allows_reusing_samples():
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate

    table = validate_prompts(pa.table({"prompt": ["Write a poem about rain."] * 3 + ["What is 2+2?"] * 2,
                                       "temperature": [0.8, 0.8, 0.8, 0.0, 0.0]}))
    cfg = DedupConfig(stages=("exact", "near"))
    out = deduplicate(table, cfg)
    assert out["status"].to_pylist() == ["pending", "pending", "pending", "pending", "duplicate"]
    reused = deduplicate(table, DedupConfig(stages=("exact", "near"), reuse_sampled=True))
    assert reused["status"].to_pylist() == ["pending", "duplicate", "duplicate", "pending", "duplicate"]
