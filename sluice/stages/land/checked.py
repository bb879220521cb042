"""Land: what checking the dedup stage's large clusters cost (sluice/stages/dedup/verify.py), as the run's own line.

Before one answer is reused for a large near / semantic cluster, the dedup stage answers a sample of its members
and the canonical row on the probe tier (and asks the judge about free-text pairs). That spend is no row's cost:
the probes' answers are not the answers the rows land with. Like the judge's (judged.py) it is the run's: its line
is `runs.billing['dedup']['checks']` (`cost_usd`: probe answers, canonical included, and judge calls), and it is
part of `runs.cost_usd`, so the total is the rows' cost plus the judge's plus the checks', and the saving against
all-premium is net of it.
"""

from __future__ import annotations

from sluice.stages.land.totals import plus_spend


def checks_cost(billing: dict | None) -> float:
    """The cluster checks' cost from a run's billing (0.0: no cluster was checked)."""
    checks = ((billing or {}).get("dedup") or {}).get("checks") or {}
    return float(checks.get("cost_usd") or 0.0)


def checks_spend(summary: dict, billing: dict | None) -> dict:
    """The checks' line added to a run's summary (`summarise`, after `judge_spend`): checks_cost_usd,
    clusters_checked, clusters_refused, and the run's total cost and saving with the checks' cost in them."""
    cost = checks_cost(billing)
    if not cost:
        return {}
    checks = billing["dedup"]["checks"]  # type: ignore[index]  # checks_cost found it
    return {"checks_cost_usd": cost, "clusters_checked": int(checks.get("clusters_checked", 0)),
            "clusters_refused": int(checks.get("clusters_refused", 0)), **plus_spend(summary, cost)}
