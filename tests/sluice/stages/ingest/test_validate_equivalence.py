"""The batch-wise, vectorised `validate_prompts` (issue 19) against the row-by-row one it replaced: the output
recorded from the old code (commit 9e1c618) on a rich fixture, every bad-row kind the other ingest tests cover
plus a generated file of realistic rows, must come back identical (same schema, rows, row ids, quarantine
reasons), whatever the batch size.

The recorded outputs are in validate_before_issue19.parquet (one `case` column added); to re-record them from
the code at hand: `.venv/bin/python tests/sluice/stages/ingest/test_validate_equivalence.py`.
"""

from __future__ import annotations

import json
import random
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.contracts.shapes import RequestDefaults, schema_from_choices
from sluice.stages.ingest.read import read_prompts, validate_prompts

RECORDED = Path(__file__).with_name("validate_before_issue19.parquet")
SOURCE = "fixture.parquet"


def _turn(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def _generated(n: int = 4000, seed: int = 7) -> pa.Table:
    """Realistic rows with the usual faults sprinkled in: repeated / null / blank ids, ids like the generated
    keys, blank and unicode-blank prompts, long prompts, odd max_tokens, system prompts."""
    rng = random.Random(seed)
    words = ("what is the capital of France explain step by step sum numbers café naïve 東京 über résumé "
             "please thanks translate summarise code python rust why how many apples does Tom have").split()
    ids, prompts, systems, mts = [], [], [], []
    for i in range(n):
        r = rng.random()
        ids.append(None if r < 0.01 else " " if r < 0.02 else f"__row{rng.randrange(n)}" if r < 0.03
                   else f"q{rng.randrange(n // 2)}" if r < 0.15 else f"q{i}")
        k = rng.random()
        text = " ".join(rng.choice(words) for _ in range(rng.randrange(1, 60)))
        prompts.append(None if k < 0.01 else "" if k < 0.02 else " \u3000\n\t\u2003" if k < 0.03
                       else text * 40 if k < 0.05 else ("\u00a0" + text + "\u2028") if k < 0.07 else text)
        systems.append("Be brief." * rng.randrange(1, 30) if rng.random() < 0.2 else None)
        m = rng.random()
        mts.append(None if m < 0.6 else rng.choice((0, -3, 40000, 2**31 + 5)) if m < 0.65
                   else rng.choice((16, 64, 256, 1024, 32768)))
    return pa.table({"id": pa.array(ids, pa.string()), "prompt": prompts, "system": systems,
                     "max_tokens": pa.array(mts, pa.int64())})


def _latin1_string_column(values: list[bytes | None]) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())


def fixture() -> list[tuple[str, pa.Table, dict]]:
    """(case, input table, validate_prompts keyword arguments)."""
    good = ["What is the capital of France?", "Summarise: the cat sat on the mat.", "Translate 'hello' to Spanish."]
    schema = json.dumps({"type": "object", "properties": {"a": {"type": "string"}}})
    shapes = pa.table({
        "id": ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s1"],
        "prompt": ["q0", "q1", "q2", "q3", "q4", "q5", "q6", "q7"],
        "temperature": [0.3, None, 5.0, float("nan"), None, 1, None, 9.0],
        "stop": [["\n\n"], None, None, [""], None, ["x", "y"], None, None],
        "response_schema": [None, schema, None, None, '{"type": "nope"}', schema, None, None],
        "reference": ["42", "  ", None, "Paris", "x", None, "y", "z"],
        "grader": [" Number ", None, "exact", "fuzzy", None, "json", "bogus", None],
        "tags": ['{"team": "search"}', '{"team": 5}', "team=ads", None, '{"a b": "x"}', "", None, '{"t": "u"}'],
    })
    chats = pa.table({
        "id": [1, 2, 3, 4, 5, 6, 7],
        "prompt": [None, "q", None, None, None, None, None],
        "system": [None, None, "sys", None, None, None, None],
        "messages": [json.dumps([_turn("user", "hello there")]), json.dumps([_turn("user", "x")]),
                     json.dumps([_turn("user", "y")]), "{not json",
                     json.dumps([_turn("system", "be kind"), _turn("user", "a"), _turn("assistant", "b"),
                                 _turn("user", "c")]), None, json.dumps([_turn("user", "  ")])],
    })
    refs = pa.table({"prompt": good, "reference": pa.array([42.0, float("inf"), float("nan")]),
                     "grader": pa.array([b"exact", b"\xff", None], pa.binary())})
    return [
        ("generated", _generated(), {}),
        ("generated capped", _generated(), {"max_prompt_chars": 2000, "max_context_tokens": 1500,
                                            "default_max_tokens": 256}),
        ("shapes, grading, tags", shapes, {"defaults": RequestDefaults(response_schema=schema_from_choices("x,y"),
                                                                        temperature=0.0, grader="contains")}),
        ("chats", chats, {"max_context_tokens": 40, "default_max_tokens": 16}),
        ("chats uncapped", chats, {"max_prompt_chars": None}),
        ("references of other types", refs, {}),
        ("binary prompt and system", pa.table({
            "prompt": pa.array([good[0].encode(), "café?".encode("latin-1"), None, b" \t", b"ok", b"fine"],
                               pa.binary()),
            "system": pa.array([b"be brief", b"\xff\xfe", None, None, "ünï".encode(), b"a\xc3"], pa.binary())}),
         {}),
        ("invalid UTF-8 in string columns", pa.table({
            "id": _latin1_string_column([b"a", "é".encode("latin-1"), b"c", "é".encode("latin-1")]),
            "prompt": _latin1_string_column([b"x", b"y", "café".encode("latin-1"), None]),
            "system": _latin1_string_column([None, b"s\xe9", None, None])}), {}),
        ("float ids and max_tokens", pa.table({
            "id": [1.0, float("nan"), 2.5, 1.0, 4.0, 5.0, float("inf")],
            "prompt": ["a", "b", "c", "d", "e", "f", "g"],
            "max_tokens": [16.0, float("nan"), None, 16.5, float("inf"), 1e9, 8.0]}), {}),
        ("integer ids, uint64 max_tokens", pa.table({
            "id": pa.array([5, 6, 5, None, 8], pa.int64()),
            "prompt": ["a", "b", "c", "d", "e"],
            "max_tokens": pa.array([16, 2**64 - 1, 0, None, 32768], pa.uint64())}), {}),
        ("decimals", pa.table({
            "id": pa.array([Decimal(1), Decimal(2), Decimal(2)], pa.decimal128(38, 0)),
            "prompt": good,
            "max_tokens": pa.array([Decimal("16"), Decimal("16.5"), None], pa.decimal128(10, 1))}), {}),
        ("dictionary prompt and system", pa.table({
            "prompt": pa.array(good + [None, "  "]).dictionary_encode(),
            "system": pa.array(["a", "a", None, None, "b"]).dictionary_encode(),
            "id": pa.array(["x", "y", "x", "", "__row0"]).dictionary_encode()}), {}),
        ("large strings", pa.table({"prompt": pa.array(good + ["", "x" * 120], pa.large_string()),
                                    "system": pa.array(["s", None, "t", None, None], pa.large_string())}),
         {"max_prompt_chars": 100}),
        ("null-type columns", pa.table({"prompt": pa.array([None, None], pa.null()),
                                        "system": pa.array([None, None], pa.null()),
                                        "id": pa.array([None, None], pa.null()),
                                        "max_tokens": pa.array([None, None], pa.null())}), {}),
        ("generated keys taken by ids", pa.table({"id": ["a", "a", "__row1", "___row1", None, "__row4"],
                                                  "prompt": ["p"] * 6}), {}),
        ("no rows", pa.table({"prompt": pa.array([], pa.string()), "id": pa.array([], pa.string())}), {}),
        ("control characters", pa.table({"prompt": ["tab\there", "nul\x00byte", "bell\x07 and emoji 🎉",
                                                    "\x1c\x1d\x1e\x1f\x85"]}), {}),
    ]


def outputs(small_only: bool = False, **kw) -> pa.Table:
    parts = []
    for case, table, options in fixture():
        if small_only and table.num_rows > 100:
            continue
        out = validate_prompts(table, source=SOURCE, **options, **kw)
        parts.append(out.append_column("case", pa.array([case] * out.num_rows, pa.string())))
    return pa.concat_tables(parts)


@pytest.mark.parametrize("batch_rows", [None, 1, 2, 61, 1000])
def test_output_is_what_the_row_by_row_code_gave(batch_rows):
    """Whole, and in slices of 1, 2, 61 and 1000 rows (slices of 1 or 2 on the small cases only: time)."""
    expected = pq.read_table(RECORDED)
    got = outputs(small_only=batch_rows in (1, 2), **({} if batch_rows is None else {"batch_rows": batch_rows}))
    assert got.schema == expected.schema
    cases = set(got["case"].to_pylist())
    assert len(cases) == (14 if batch_rows in (1, 2) else 16)  # "no rows" has none
    for case in sorted(cases):
        want = [r for r in expected.to_pylist() if r["case"] == case]
        have = [r for r in got.to_pylist() if r["case"] == case]
        assert have == want, case


def test_a_file_reads_as_its_table_validates(tmp_path):
    table = _generated()
    pq.write_table(table, tmp_path / "g.parquet", row_group_size=1000)
    got = read_prompts(tmp_path / "g.parquet")
    expected = validate_prompts(table, source=str(tmp_path / "g.parquet"))
    assert got.equals(expected)


if __name__ == "__main__":
    pq.write_table(outputs(), RECORDED, compression="zstd")
    print(f"recorded {RECORDED}")
