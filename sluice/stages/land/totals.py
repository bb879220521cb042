"""Land: a run's total and its saving against all-premium, from the rows' cost and the run's own lines.

The rows' cost is summed by `results.summarise`; the judge's (judged.py), the dedup cluster checks' (checked.py)
and validating tiers (validated.py) are the run's own spend, each added to the total in turn."""

from __future__ import annotations


def saving(cost_usd: float, baseline_cost_usd: float) -> dict:
    """saving_usd and saving_pct of a run that cost `cost_usd` against its all-premium baseline."""
    return {"saving_usd": baseline_cost_usd - cost_usd,
            "saving_pct": (100.0 * (baseline_cost_usd - cost_usd) / baseline_cost_usd)
            if baseline_cost_usd > 0 else 0.0}


def plus_spend(summary: dict, usd: float) -> dict:
    """The run's cost_usd, saving_usd and saving_pct once `usd` of its own spend is added to `summary`'s total."""
    cost = summary["cost_usd"] + usd
    return {"cost_usd": cost, **saving(cost, summary["baseline_cost_usd"])}
