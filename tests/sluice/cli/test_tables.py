"""The summary and `sluice runs` tables printed whole when the output is not a terminal (a file, a pipe, a test
runner): rich's 80-column fallback used to wrap the summary's long lines and cut `sluice runs`' numbers."""

import importlib
import io
import re

import pytest
from rich.console import Console
from rich.table import Table
from typer.testing import CliRunner

from sluice.cli import app
from sluice.cli.tables import print_table
from sluice.reports.summary import summary_lines
from sluice.stages.land.results import summarise
from tests.support.sample_warehouse import R1, build_dashboard_warehouse, results_frame

QUALITY = "0.67 [0.53, 0.80] (n=21 judged shadow pairs; 3 unjudged pairs (free text, no judge) left out; " \
          "covers 60 of 60 answered rows)"  # a long cell


def summary() -> dict:
    s = summarise(results_frame("r1", R1))
    s.update(run_id="20261204T165053Z-175fe5", dataset="gsm8k", warehouse="data/warehouse.duckdb",
             quality_estimate=0.67, quality_low=0.53, quality_high=0.80, quality_n=21, quality_unjudged=3,
             quality_rows=60, quality_answered_rows=60,
             quality_per_tier={"mid": {"estimate": None}, "premium": {"assumed": True},
                               "small": {"estimate": 0.5, "low": 0.2, "high": 0.8, "n": 8}})
    return s


def borders(text: str) -> list[str]:
    lines = [line.rstrip("\n") for line in text.splitlines()]
    top = next(i for i, line in enumerate(lines) if line.startswith(("┌", "┏")))
    bottom = max(i for i, line in enumerate(lines) if line.startswith("└"))
    return lines[top:bottom + 1]


def test_the_run_summary_is_whole_in_a_file(monkeypatch):
    cli = importlib.import_module("sluice.cli.app")  # the module (the package exports its `app`)
    out = io.StringIO()
    console = Console(file=out)  # not a terminal: rich falls back to 80 columns
    assert not console.is_terminal and console.width == 80
    monkeypatch.setattr(cli, "console", console)
    s = summary()
    lines = dict(summary_lines(s))
    assert len(lines["quality estimate"]) > 80  # too long for the fallback width
    cli._print_summary(s, 12.5)
    text = out.getvalue()
    table = borders(text)
    assert table[0].startswith("┌") and table[0].endswith("┐") and table[-1].startswith("└")
    assert {len(line) for line in table} == {len(table[0])} and len(table[0]) > 80  # every line as wide as the top
    assert "Sluice run 20261204T165053Z-175fe5 (gsm8k)" in text.splitlines()[0]
    rows = [line for line in table if line.startswith("│")]
    labels = [line.split("│")[1].strip() for line in rows]
    assert "" not in labels  # no value wrapped onto a line of its own
    for label, value in lines.items():  # every line of the summary whole, on one line of the table
        assert re.search(rf"│ {re.escape(label)} +│ {re.escape(value)} +│", text), label
    assert "premium 1 (premium: acceptable by definition)" in text and "wall time" in text


def test_sluice_runs_keeps_its_numbers_when_piped(tmp_path):
    wh = build_dashboard_warehouse(tmp_path / "wh.duckdb")
    res = CliRunner().invoke(app, ["runs", "--warehouse", str(wh), "--runs-dir", str(tmp_path / "none")])
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    lines = borders(res.output)
    assert {len(line) for line in lines} == {len(lines[0])}
    for cell in ("$0.0115", "$0.0145 (55.8%)", "0.750 of 4 (all-premium 1.000)", "2026-01-07 20:00"):
        assert cell in res.output
    res = CliRunner().invoke(app, ["runs", "show", "n2-qa", "--warehouse", str(wh)])
    assert res.exit_code == 0 and "…" not in res.output and "1.000  (4 of 4; this run kept 75.0% of it)" in res.output


@pytest.mark.parametrize("width", [40, 60])
def test_on_a_terminal_the_table_fits_the_window(width):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    table = Table(show_header=False)
    table.add_row("quality estimate", QUALITY)
    print_table(console, table)
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) == width and len(lines) > 3  # wrapped to the window
