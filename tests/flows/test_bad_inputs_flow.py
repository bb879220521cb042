"""Bad inputs end to end: `sluice run` on the CLI with an all-API catalogue on a loopback server (no engine).

A file mixing good rows with several kinds of bad ones lands every row: the good ones answered (`ok`), the bad ones
`quarantined` with a reason naming the file and the row, and nothing lost. A file that cannot be read at all
exits with code 2 and a message naming it.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from sluice.cli import app

HOSTILE_ID = "x'; DROP TABLE results; --"


def _catalogue(path, base_url: str, window: int):
    tiers = [("small", 0.10, 0.40), ("mid", 0.20, 0.60), ("premium", 2.50, 10.00)]
    path.write_text('baseline = "premium"\n' + "".join(
        f'[[tiers]]\nname = "{n}"\nbackend = "openai"\nmodel = "{n}-test"\nbase_url = "{base_url}"\n'
        f"input_usd_per_1m = {i}\noutput_usd_per_1m = {o}\nmax_model_len = {window}\n" for n, i, o in tiers))
    return path


def test_a_file_of_mixed_good_and_bad_rows_lands_every_row(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv("SLUICE_MAX_PROMPT_CHARS", "20000")
    monkeypatch.setenv("COLUMNS", "400")  # the CLI's messages on one line
    cat = _catalogue(tmp_path / "cat.toml", openai_server.base_url, window=2048)
    rows = [  # id, prompt (bytes: the column is binary, as some writers leave it), max_tokens, expected reason
        ("g1", b"What is the capital of France?", 16, None),
        ("g2", b"Name three primary colours.", None, None),
        (HOSTILE_ID, b"Spell 'sluice' backwards.", 16, None),
        ("g4", "Translate 'café' to English.".encode(), 16, None),
        ("n1", None, 16, "prompt is null"),
        ("g1", b"A repeated id.", 16, "duplicate id 'g1' (first seen at row 0)"),
        ("neg", b"Negative budget.", -5, "max_tokens=-5 is outside 1..32768"),
        ("huge", b"Huge budget.", 10**9, "max_tokens=1000000000 is outside"),
        ("latin1", "Résumé, s'il vous plaît.".encode("latin-1"), 16, "prompt is not valid UTF-8"),
        ("ctx", b"word " * 3000, 16, "over the largest context window in the catalogue (2048)"),
        ("big", b"x" * 25_000, 16, "prompt too long: 25,000 characters"),
    ]
    src = tmp_path / "mixed.parquet"
    pq.write_table(pa.table({
        "id": [r[0] for r in rows],
        "prompt": pa.array([r[1] for r in rows], pa.binary()),
        "max_tokens": pa.array([r[2] for r in rows], pa.int64()),
        "meta": [{"source": "test", "tags": ["a", "b"]}] * len(rows),  # extra columns are ignored
    }), src)
    wh, data = tmp_path / "wh.duckdb", tmp_path / "data"

    runner = CliRunner()
    res = runner.invoke(app, ["run", str(src), "--warehouse", str(wh), "--catalogue", str(cat),
                              "--data-dir", str(data)])
    assert res.exit_code == 0, res.output

    with duckdb.connect(str(wh), read_only=True) as con:
        landed = con.execute("select row_id, status, error, response from results order by row_id").fetchall()
    assert len(landed) == len(rows)  # nothing lost
    by_index = {}
    for row_id, status, error, response in landed:
        by_index[row_id] = (status, error, response)
    ok = {rid: v for rid, v in by_index.items() if v[0] == "ok"}
    assert set(ok) == {"g1", "g2", HOSTILE_ID, "g4"}
    assert all(v[2] and v[2].startswith("answer to:") for v in ok.values())
    quarantined = sorted(v[1] for v in by_index.values() if v[0] == "quarantined")
    assert len(quarantined) == len(rows) - 4
    for i, (_, _, _, reason) in enumerate(rows):
        if reason:
            assert any(e.startswith(f"{src} row {i}: ") and reason in e for e in quarantined), (i, reason)
    # the run folder's results file holds the same rows
    (run_dir,) = (data / "runs").iterdir()
    assert pq.read_metadata(run_dir / "results.parquet").num_rows == len(rows)
    # only the good rows reached the API
    assert len(openai_server.received) == 4

    # a file that cannot be read: exit code 2 and a message naming the file
    bad = tmp_path / "not-parquet.parquet"
    bad.write_text("id,prompt\n1,hello\n")
    res = runner.invoke(app, ["run", str(bad), "--warehouse", str(wh), "--catalogue", str(cat),
                              "--data-dir", str(data)])
    assert res.exit_code == 2
    assert "not-parquet.parquet" in res.output and "not a readable Parquet file" in res.output
