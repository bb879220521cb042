"""`sluice dedup --max-false-hit`: the rule it chose is printed, and the typo of a short prompt is a near duplicate."""

import importlib

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

cli = importlib.import_module("sluice.cli.app")


def test_sluice_dedup_prints_its_rule_and_marks_a_typo(tmp_path):
    data, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"prompt": ["How do I learn Python quickly?", "How do I learn Pyhton quickly?",
                                        "How do I learn Python slowly?"]}), data)
    result = CliRunner().invoke(cli.app, ["dedup", str(data), "-o", str(out), "--only", "exact,near",
                                          "--max-false-hit", "0.02"])
    assert result.exit_code == 0, result.output
    assert "semantic rule for max false-hit rate 0.02: near: character shingles for short prompts" in result.output
    assert pl.read_parquet(out)["dup_kind"].to_list() == [None, "near", None]
    bad = CliRunner().invoke(cli.app, ["dedup", str(data), "-o", str(out), "--max-false-hit", "0"])
    assert bad.exit_code == 2 and "max_false_hit must be in (0, 1)" in bad.output
