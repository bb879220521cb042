"""The hard budget: `--budget-usd` caps the whole run's spend, not only its routing plan.

    ledger.py  reserve before a pass sends, settle the measured cost after, release the rest; in the run folder
    costs.py   what a pass is expected to cost: API rows at most (max_tokens, over-counted input), self-hosted
               time from the tier's measured throughput
    admit.py   first answers within the budget (moved to the cheapest tier that fits, else `deferred`); the rows
               of a follow-up pass (escalation, shadow, retry) that fit; the judge, all or nothing
    carry.py   rows an earlier run deferred, put first in the next run of the dataset

Routing plans within the budget first (`sluice.stages.route.policies.route_by_budget`); the ledger then holds
every pass to what is left: first answers, cascade escalations, the shadow sample, schema retries and the judge.
The flow calls it through thin hooks (`tasks/budget.py`); without a budget there is no ledger and nothing changes.
"""

from __future__ import annotations

from sluice.stages.budget.admit import DEFERRED, admit_first_answers, admit_judge, admit_pass, defer_duplicates
from sluice.stages.budget.carry import carry_deferred
from sluice.stages.budget.costs import TierRate, rate_of, tier_rates
from sluice.stages.budget.ledger import Ledger, ledger_path

__all__ = ["DEFERRED", "Ledger", "TierRate", "admit_first_answers", "admit_judge", "admit_pass", "carry_deferred",
           "defer_duplicates", "ledger_path", "rate_of", "tier_rates"]
