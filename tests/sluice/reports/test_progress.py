"""The run's progress model: shards add up, tokens per second and ETA from an injected clock."""

from pathlib import Path

import pytest

from sluice.reports.progress import RunProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_shards_add_up_and_eta_follows_the_pace():
    clock = Clock()
    p = RunProgress(budget_usd=1.0, clock=clock)
    p.start("infer small", total=300)
    assert p.stages()[0].eta_seconds(clock()) is None  # no rows done yet: no pace
    clock.now = 110.0
    p.advance("infer small", rows=100, tokens=5_000, cost_usd=0.01)
    clock.now = 120.0
    p.advance("infer small", rows=50, tokens=2_000, cost_usd=0.005)
    s = p.stages()[0]
    assert (s.done, s.total, s.tokens) == (150, 300, 7_000)
    assert s.cost_usd == pytest.approx(0.015)
    assert s.tokens_per_second(clock()) == pytest.approx(7_000 / 20)
    assert s.eta_seconds(clock()) == pytest.approx(20 / 150 * 150)  # 150 rows left at 7.5 rows/s
    assert s.fraction() == pytest.approx(0.5)
    assert p.current().name == "infer small"
    clock.now = 140.0
    p.finish("infer small")
    s = p.stages()[0]
    assert s.finished and s.eta_seconds(clock()) == 0.0 and s.elapsed(clock() + 100) == pytest.approx(40)
    assert p.current() is None


def test_spend_sums_stages_and_a_new_run_starts_clean():
    clock = Clock()
    p = RunProgress(clock=clock)
    seen = []
    p.on_run(lambda run_id, run_dir: seen.append((run_id, run_dir)))
    p.begin_run("r1", Path("/tmp/r1"))
    p.start("ingest")
    p.finish("ingest", rows=66)
    p.advance("infer cheap", rows=10, cost_usd=0.25)
    p.advance("escalation premium", rows=2, cost_usd=0.5)
    assert p.spent_usd() == pytest.approx(0.75)
    assert [s.name for s in p.stages()] == ["ingest", "infer cheap", "escalation premium"]
    assert p.stages()[0].total == 66 and p.stages()[0].fraction() == 1.0
    assert seen == [("r1", Path("/tmp/r1"))]
    p.begin_run("r2", Path("/tmp/r2"))
    assert p.stages() == [] and p.run_id == "r2"


def test_a_retried_stage_starts_over():
    clock = Clock()
    p = RunProgress(clock=clock)
    p.start("infer small", total=10)
    p.advance("infer small", rows=4)
    p.finish("infer small")
    p.start("infer small", total=10)
    assert p.stages()[0].done == 0 and not p.stages()[0].finished


def test_the_view_shows_spend_against_the_budget():
    from rich.console import Console

    from sluice.cli.live import render

    clock = Clock()
    p = RunProgress(budget_usd=2.0, clock=clock)
    p.begin_run("r1", Path("/tmp/r1"))
    p.start("infer small", total=100)
    clock.now = 110.0
    p.advance("infer small", rows=25, tokens=1_000, cost_usd=0.5)
    console = Console(width=120, record=True)
    console.print(render(p))
    text = console.export_text()
    assert "25/100" in text and "$0.5000 of $2.0000 budget" in text and "100" in text  # 1000 tokens / 10 s
    assert "0:30" in text  # ETA: 75 rows at 2.5 rows/s
