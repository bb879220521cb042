"""Land: what validating tiers cost (sluice/stages/infer/tier_validation.py), as the run's own line.

Before a tier with a `reference_tier` answers, it and its reference answer a sample of its rows (and the judge is
asked about free-text pairs). Those answers are not the ones the rows land with, so that spend is no row's cost.
Like the judge's (judged.py) and the dedup cluster checks' (checked.py) it is the run's: its line is
`runs.billing['validation']` (per tier: `cost_usd`, rows sampled, the reference, passed), and it is part of
`runs.cost_usd`, so the saving against all-premium is net of it. A resumed run reuses its decision and pays once.
"""

from __future__ import annotations

from sluice.stages.land.totals import plus_spend


def validation_cost(billing: dict | None) -> float:
    """Validation's cost from a run's billing (0.0: no tier was validated)."""
    return float(sum(float(v.get("cost_usd") or 0.0) for v in ((billing or {}).get("validation") or {}).values()))


def validation_spend(summary: dict, billing: dict | None) -> dict:
    """The validation line added to a run's summary (after the judge's and the checks'): validation_cost_usd,
    tiers_validated, tiers_refused, and the run's total cost and saving with validation's cost in them."""
    cost = validation_cost(billing)
    if not cost:
        return {}
    tiers = billing["validation"]  # type: ignore[index]  # validation_cost found it
    return {"validation_cost_usd": cost, "tiers_validated": len(tiers),
            "tiers_refused": sum(not v.get("passed", True) for v in tiers.values()), **plus_spend(summary, cost)}
