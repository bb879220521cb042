"""The dedup cluster checks' spend is the run's: in its total and net of its saving, in no row's cost."""

from sluice.stages.land.checked import checks_cost, checks_spend


def test_the_checks_cost_is_added_to_the_total_and_taken_off_the_saving():
    summary = {"cost_usd": 1.0, "baseline_cost_usd": 4.0, "saving_usd": 3.0, "saving_pct": 75.0}
    billing = {"dedup": {"rule": "x", "checks": {"clusters_checked": 3, "clusters_refused": 1, "cost_usd": 0.5}}}
    line = checks_spend(summary, billing)
    assert line["cost_usd"] == 1.5 and line["saving_usd"] == 2.5 and line["saving_pct"] == 62.5
    assert line["checks_cost_usd"] == 0.5 and line["clusters_checked"] == 3 and line["clusters_refused"] == 1


def test_no_checks_change_nothing():
    assert checks_spend({"cost_usd": 1.0, "baseline_cost_usd": 4.0}, {"dedup": {"rule": "x"}}) == {}
    assert checks_spend({"cost_usd": 1.0, "baseline_cost_usd": 4.0}, None) == {}
    assert checks_cost({"dedup": {"checks": {"cost_usd": 0.0}}}) == 0.0
