"""The judge's hand-off (review -> land): what the review stage's judge of free-text shadow pairs
(sluice/stages/review/judge.py) writes in the run folder, and the land stage reads (sluice/stages/land/judged.py).

    <run_dir>/judge/billing.json       the judge's billing line (cost, requests, pairs, outcomes; worker time)
    <run_dir>/judge/attempts.parquet   one row per request sent to the judge tier (two per pair: both orders)
    <run_dir>/judge/verdicts.parquet   one row per judged pair: its outcome; written last, the judge's commit marker

Outcomes of a pair (how the two orders' verdicts combine is argued in the judge's module docstring):

    acceptable     both orders said ACCEPTABLE
    unacceptable   both orders said UNACCEPTABLE
    split          the orders disagree: the verdict followed the position, counted as not acceptable
    unparseable    a verdict was not exactly ACCEPTABLE or UNACCEPTABLE on its first line: the pair stays unjudged
    failed         a request to the judge failed (5xx, timeout, ...): the pair stays unjudged
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

JUDGE_KIND = "judge"  # the attempts' kind in the warehouse (`attempts.kind`), and the billing line's suffix
OUTCOMES = ("acceptable", "unacceptable", "split", "unparseable", "failed")
# the outcome -> the pair's verdict on the cheap answer (None: unjudged, counted apart by outcome)
OUTCOME_VERDICT: dict[str, bool | None] = {"acceptable": True, "unacceptable": False, "split": False,
                                           "unparseable": None, "failed": None}
ORDERS = ("cheap_first", "cheap_second")  # where the cheap (candidate) answer stands in the judge's prompt

JUDGE_ATTEMPT_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("order", pa.string()),  # ORDERS
    ("tier", pa.string()),  # the judge tier
    ("model", pa.string()),
    ("status", pa.string()),  # ok | invalid (a verdict that does not parse) | failed (the request failed)
    ("error", pa.string()),
    ("verdict", pa.string()),  # ACCEPTABLE | UNACCEPTABLE | None
    ("response", pa.string()),  # the judge's whole answer, as it came
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),
    ("latency_ms", pa.float64()),
    ("cost_usd", pa.float64()),
])

JUDGE_VERDICT_SCHEMA = pa.schema([
    ("row_id", pa.string()),
    ("tier", pa.string()),  # the cheap tier whose answer was judged
    ("judge_tier", pa.string()),
    ("outcome", pa.string()),  # OUTCOMES
    ("acceptable", pa.bool_()),  # OUTCOME_VERDICT[outcome]
    ("reason", pa.string()),
])


def judge_dir(run_dir: Path) -> Path:
    return run_dir / "judge"


def judge_attempts_path(run_dir: Path) -> Path:
    return judge_dir(run_dir) / "attempts.parquet"


def judge_verdicts_path(run_dir: Path) -> Path:
    return judge_dir(run_dir) / "verdicts.parquet"


def judge_billing_path(run_dir: Path) -> Path:
    return judge_dir(run_dir) / "billing.json"
