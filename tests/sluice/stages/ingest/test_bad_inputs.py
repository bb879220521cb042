"""A catalogue of bad inputs, one test each: what `read_prompts` does with every kind of broken file or row.

Each kind is (name, how the file is built, expected outcome, expected reason, rows that must be quarantined[,
keyword arguments for `read_prompts`]):
    "file"  the whole file is refused with `IngestError`; the message names the file and contains the reason;
    "rows"  the listed rows are quarantined with `<file> row <i>: ...<reason>...`; every other row proceeds and
            no row is lost;
    "ok"    every row proceeds (the oddity is harmless: ignored or carried).
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluice.contracts.columns import MAX_PROMPT_CHARS
from sluice.stages.ingest.read import IngestError, read_prompts, validate_prompts, widest_context_window

GOOD = ["What is the capital of France?", "Summarise: the cat sat on the mat.", "Translate 'hello' to Spanish."]


def _write(path: Path, table: pa.Table, **kw) -> Path:
    pq.write_table(table, path, **kw)
    return path


def _with(column: str, values, type_=None, prompts=GOOD):
    def build(path: Path) -> Path:
        return _write(path, pa.table({"prompt": prompts, column: pa.array(values, type_)}))
    return build


def _prompts(values, type_=None):
    return lambda path: _write(path, pa.table({"prompt": pa.array(values, type_)}))


def _nested(depth: int, kind: str) -> pa.Array:
    typ, val = pa.int64(), 7
    for _ in range(depth):
        typ, val = (pa.struct([("x", typ)]), {"x": val}) if kind == "struct" else (pa.list_(typ), [val])
    return pa.array([val] * len(GOOD), typ)


def _truncated(path: Path) -> Path:
    _write(path, pa.table({"prompt": GOOD * 50}))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _corrupt_pages(path: Path) -> Path:
    """Footer intact, the data pages overwritten: the reader finds garbage where the first page should be."""
    _write(path, pa.table({"prompt": GOOD * 50}), compression="snappy")
    data = bytearray(path.read_bytes())
    data[4:200] = b"\xff" * 196
    path.write_bytes(bytes(data))
    return path


def _bytes(content: bytes):
    def build(path: Path) -> Path:
        path.write_bytes(content)
        return path
    return build


def _duplicate_prompt_column(path: Path) -> Path:
    return _write(path, pa.Table.from_arrays([pa.array(GOOD), pa.array(GOOD)], names=["prompt", "prompt"]))


def _invalid_utf8_in_string_column(path: Path) -> Path:
    # what a non-Arrow writer can produce: a Parquet *string* column holding latin-1 bytes (Arrow never checks
    # a view, so this writes the bytes as they are)
    raw = pa.array([GOOD[0].encode(), "café au lait?".encode("latin-1"), GOOD[2].encode()], pa.binary())
    return _write(path, pa.table({"prompt": raw.view(pa.string())}))


def _ids(values, type_=None):
    return lambda path: _write(path, pa.table({"id": pa.array(values, type_), "prompt": GOOD}))


TEN_MB = "lorem ipsum " * (10 * 2**20 // 12)

CASES = [
    # kind, build, outcome, reason, quarantined rows
    ("not parquet (CSV text)", _bytes(b"id,prompt\n1,hello\n"), "file", "not a readable Parquet file", None),
    ("empty file (0 bytes)", _bytes(b""), "file", "empty file (0 bytes)", None),
    ("only the magic bytes", _bytes(b"PAR1PAR1"), "file", "not a readable Parquet file", None),
    ("truncated parquet (half the bytes)", _truncated, "file", "not a readable Parquet file", None),
    ("corrupt data pages, footer intact", _corrupt_pages, "file", "not a readable Parquet file", None),
    ("missing prompt column", lambda p: _write(p, pa.table({"text": GOOD})), "file",
     "missing required column 'prompt' (found: text)", None),
    ("no columns at all", lambda p: _write(p, pa.table({})), "file", "found: no columns", None),
    ("hostile column name instead of prompt", lambda p: _write(p, pa.table({'prompt"; --': GOOD})), "file",
     "missing required column 'prompt' (found: prompt\"; --)", None),
    ("prompt column twice", _duplicate_prompt_column, "file", "column 'prompt' appears 2 times", None),
    ("prompt is int", _prompts([1, 2, 3]), "file", "column 'prompt' must hold strings, found int64", None),
    ("max_tokens is string", _with("max_tokens", ["16", "32", "64"]), "file",
     "column 'max_tokens' must hold integers, found string", None),
    ("max_tokens is bool", _with("max_tokens", [True, False, True]), "file",
     "column 'max_tokens' must hold integers, found bool", None),
    ("system is a list", _with("system", [["be brief"], [], ["x"]]), "file",
     "column 'system' must hold strings, found list<", None),
    ("id is a struct (mixed-type ids)", _ids([{"n": 1, "s": None}, {"n": None, "s": "b"}, {"n": 3, "s": None}]),
     "file", "column 'id' must hold strings or integers, found struct", None),
    ("zero rows", lambda p: _write(p, pa.table({"prompt": pa.array([], pa.string())})), "file", "no rows", None),
    ("null prompts", _prompts([GOOD[0], None, GOOD[2]]), "rows", "prompt is null", [1]),
    ("all-null prompt column (null type)", _prompts([None, None, None]), "rows", "prompt is null", [0, 1, 2]),
    ("blank prompt", _prompts([GOOD[0], " \n\t ", GOOD[2]]), "rows", "prompt is empty", [1]),
    ("latin-1 bytes in a binary prompt column",
     _prompts([GOOD[0].encode(), "café?".encode("latin-1"), GOOD[2].encode()], pa.binary()), "rows",
     "prompt is not valid UTF-8 (byte 0xe9 at offset 3)", [1]),
    ("invalid UTF-8 in a string prompt column", _invalid_utf8_in_string_column, "rows",
     "prompt is not valid UTF-8 (byte 0xe9 at offset 3)", [1]),
    ("invalid UTF-8 in a binary system column",
     _with("system", [b"be brief", b"\xff\xfe", None], pa.binary()), "rows", "system is not valid UTF-8", [1]),
    ("duplicate ids", _ids(["a", "b", "a"]), "rows", "duplicate id 'a' (first seen at row 0)", [2]),
    ("null id", _ids(["a", None, "c"]), "rows", "id is null", [1]),
    ("empty id", _ids(["a", " ", "c"]), "rows", "id is empty", [1]),
    ("ids that are floats with a gap (pandas)", _ids([1.0, float("nan"), 3.0]), "rows", "id is null", [1]),
    ("an id that is a fraction", _ids([1.0, 2.5, 3.0]), "rows", "id=2.5 is not a whole number", [1]),
    ("max_tokens negative", _with("max_tokens", [16, -5, 16]), "rows", "max_tokens=-5 is outside 1..32768", [1]),
    ("max_tokens 10**9", _with("max_tokens", [16, 10**9, 16]), "rows", "max_tokens=1000000000 is outside", [1]),
    ("max_tokens past int64 (uint64 max)", _with("max_tokens", [16, 2**64 - 1, 16], pa.uint64()), "rows",
     f"max_tokens={2**64 - 1} is outside", [1]),
    ("max_tokens a fraction (float column)", _with("max_tokens", [16.0, 16.5, None]), "rows",
     "max_tokens=16.5 is not a whole number", [1]),
    ("max_tokens infinite", _with("max_tokens", [16.0, float("inf"), 8.0]), "rows",
     "max_tokens=inf is not a whole number", [1]),
    ("a 10 MB prompt", _prompts([GOOD[0], TEN_MB, GOOD[2]]), "rows",
     f"prompt too long: {len(TEN_MB):,} characters (with the system prompt), over the {MAX_PROMPT_CHARS:,} limit",
     [1]),
    ("a folder named like a file", lambda p: (p.mkdir(), p)[1], "file", "no such file", None),
    ("max_tokens a decimal fraction", _with("max_tokens", [Decimal("16"), Decimal("16.5"), None],
                                            pa.decimal128(10, 1)), "rows", "max_tokens=Decimal('16.5')", [1]),
    ("ids and max_tokens as decimal(38, 0) (warehouse exports)",
     lambda p: _write(p, pa.table({"id": pa.array([Decimal(1), Decimal(2), Decimal(3)], pa.decimal128(38, 0)),
                                   "prompt": GOOD,
                                   "max_tokens": pa.array([Decimal(16)] * 3, pa.decimal128(38, 0))})),
     "ok", None, None),
    ("prompt over the context window", _with("max_tokens", [16, 16, 16], prompts=[GOOD[0], "word " * 1000, GOOD[2]]),
     "rows", "over the largest context window in the catalogue (1024)", [1], {"max_context_tokens": 1024}),
    ("max_tokens NaN in a float column (pandas)", _with("max_tokens", [16.0, float("nan"), None]), "ok", None, None),
    ("struct metadata nested 50 levels", _with("meta", _nested(50, "struct")), "ok", None, None),
    ("list metadata nested 50 levels", _with("meta", _nested(50, "list")), "ok", None, None),
    ("hostile extra column name", _with('prompt"; --', ["x", "y", "z"]), "ok", None, None),
    ("categorical (dictionary) prompt and system",
     lambda p: _write(p, pa.table({"prompt": pa.array(GOOD).dictionary_encode(),
                                   "system": pa.array(["a", "a", None]).dictionary_encode()})), "ok", None, None),
    ("control characters and NUL in a prompt", _prompts(["tab\there", "nul\x00byte", "bell\x07 and emoji 🎉"]),
     "ok", None, None),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path):
    kind, build, outcome, reason, bad_rows, *options = case  # options: read_prompts keyword arguments
    kw = options[0] if options else {}
    path = build(tmp_path / "batch.parquet")
    if outcome == "file":
        with pytest.raises(IngestError) as err:
            read_prompts(path, **kw)
        assert str(path) in str(err.value)
        assert reason in str(err.value)
        return
    n = pq.ParquetFile(path, schema_depth_limit=1024).metadata.num_rows
    rows = read_prompts(path, **kw)
    assert rows.num_rows == n  # nothing lost
    assert len(set(rows["row_id"].to_pylist())) == n  # every row has its own key to land under
    status, errors = rows["status"].to_pylist(), rows["error"].to_pylist()
    bad = bad_rows or []
    assert [i for i, s in enumerate(status) if s == "quarantined"] == bad
    assert all(s == "pending" for i, s in enumerate(status) if i not in bad)
    for i in bad:
        assert errors[i].startswith(f"{path} row {i}: "), errors[i]
        assert reason in errors[i], errors[i]


def test_the_catalogue_is_big_enough():
    assert len({c[0] for c in CASES}) == len(CASES) >= 12


def test_undecodable_text_is_still_landed_readable(tmp_path):
    rows = read_prompts(_prompts([b"caf\xe9"], pa.binary())(tmp_path / "latin1.parquet"))
    assert rows["prompt"].to_pylist() == ["caf\ufffd"]  # what the row held, visibly, next to its reason


def test_float_ids_and_max_tokens_become_whole_numbers(tmp_path):
    path = _write(tmp_path / "pandas.parquet", pa.table({"id": [1.0, 2.0, 3.0], "prompt": GOOD,
                                                          "max_tokens": [16.0, float("nan"), 8.0]}))
    rows = read_prompts(path)
    assert rows["row_id"].to_pylist() == ["1", "2", "3"]
    assert rows["max_tokens"].to_pylist() == [16, None, 8]


def test_generated_keys_never_collide_with_ids_in_the_file(tmp_path):
    rows = read_prompts(_ids(["a", "a", "__row1"])(tmp_path / "sneaky.parquet"))
    keys = rows["row_id"].to_pylist()
    assert keys[0] == "a" and keys[2] == "__row1" and len(set(keys)) == 3
    assert rows["status"].to_pylist() == ["pending", "quarantined", "pending"]


def test_the_prompt_cap_is_a_parameter_and_counts_the_system_prompt(tmp_path):
    path = _write(tmp_path / "cap.parquet", pa.table({"prompt": ["x" * 60, "y" * 60], "system": ["s" * 50, None]}))
    rows = read_prompts(path, max_prompt_chars=100)
    assert rows["status"].to_pylist() == ["quarantined", "pending"]
    assert "prompt too long: 110 characters" in rows["error"][0].as_py()
    assert read_prompts(path, max_prompt_chars=None)["status"].to_pylist() == ["pending", "pending"]


def test_context_window_check_uses_the_answer_budget(tmp_path):
    long = "word " * 700  # ~875 tokens by the estimate (4 bytes a token)
    path = _write(tmp_path / "ctx.parquet", pa.table({"prompt": [long, long, "short"],
                                                       "max_tokens": [16, 200, 16]}))
    rows = read_prompts(path, max_context_tokens=1024)
    assert rows["status"].to_pylist() == ["pending", "quarantined", "pending"]
    err = rows["error"][1].as_py()
    assert err.startswith(f"{path} row 1: prompt too long: ~") and "context window in the catalogue (1024)" in err
    # the default answer budget counts when a row gives none
    rows = read_prompts(_prompts([long])(tmp_path / "d.parquet"), max_context_tokens=1024, default_max_tokens=256)
    assert rows["status"].to_pylist() == ["quarantined"]
    assert read_prompts(path)["status"].to_pylist() == ["pending"] * 3  # no window given: no check


def test_in_memory_tables_may_be_empty():
    assert validate_prompts(pa.table({"prompt": pa.array([], pa.string())})).num_rows == 0


def test_widest_context_window_needs_every_tier_to_state_one(tmp_path):
    from models.catalogue import load_catalogue

    def cat(lens):
        body = 'baseline = "t0"\n' + "".join(
            f'[[tiers]]\nname = "t{i}"\nbackend = "openai"\nmodel = "m{i}"\nbase_url = "http://127.0.0.1:9/v1"\n'
            f"input_usd_per_1m = 1.0\noutput_usd_per_1m = 1.0\n" + (f"max_model_len = {n}\n" if n else "")
            for i, n in enumerate(lens))
        (tmp_path / "c.toml").write_text(body)
        return load_catalogue(tmp_path / "c.toml")

    assert widest_context_window(cat([2048, 8192])) == 8192
    assert widest_context_window(cat([2048, None])) is None  # an API tier with no stated window: unbounded
