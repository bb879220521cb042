"""The spend ledger: reserve, settle, release; what is available; a resumed run reads the same ledger back."""

import pytest

from sluice.stages.budget import Ledger, ledger_path


def test_reserve_settle_release_keep_spent_plus_held_within_the_budget(tmp_path):
    ledger = Ledger.open(tmp_path, 1.0, {"cheap": {}})
    assert ledger is not None and ledger.available_usd == 1.0
    assert ledger.reserve("cheap", 0.6, rows=10)
    assert not ledger.reserve("premium", 0.5)  # 0.4 left: refused, nothing held
    assert ledger.available_usd == pytest.approx(0.4) and "premium" not in ledger.entries
    ledger.settle("cheap", 0.25)  # measured under the reservation: 0.35 released
    assert (ledger.spent_usd, ledger.held_usd) == (0.25, 0.0)
    assert ledger.available_usd == pytest.approx(0.75)
    assert ledger.reserve("premium", 0.5) and ledger.reserve("premium", 99.0)  # the second: already held
    ledger.release("premium")  # sent nothing
    s = ledger.summary()
    assert s["spent_usd"] == 0.25 and s["reserved_usd"] == pytest.approx(1.1)
    assert s["released_usd"] == pytest.approx(0.35 + 0.5) and s["held_usd"] == 0.0 and s["overrun_usd"] == 0.0
    assert s["passes"]["cheap"] == {"reserved_usd": 0.6, "spent_usd": 0.25, "rows": 10}


def test_a_resumed_run_continues_the_same_ledger(tmp_path):
    ledger = Ledger.open(tmp_path, 2.0, {"m": 1})
    ledger.reserve("cheap", 1.0, 4)
    ledger.settle("cheap", 0.5)
    ledger.reserve("premium", 1.2, 2)  # killed while premium was answering
    ledger.note("skipped", 3, "premium/shadow")
    assert ledger.mark_reached("first answers") and not ledger.mark_reached("again")
    again = Ledger.open(tmp_path, 99.0)  # the budget it was opened with, not a new one
    assert ledger_path(tmp_path).is_file() and again.budget_usd == 2.0 and again.model == {"m": 1}
    assert again.held_usd == 1.2 and again.spent_usd == 0.5 and again.available_usd == pytest.approx(0.3)
    assert again.reserve("premium", 5.0)  # held before the kill: kept, not reserved twice
    again.settle("premium", 1.5)  # more than it held (an estimate): spent all the same, counted as overrun
    again.settle("premium", 1.5)  # settling the same pass again changes nothing
    s = again.summary()
    assert s["spent_usd"] == 2.0 and s["overrun_usd"] == pytest.approx(0.3) and again.available_usd == 0.0
    assert s["skipped_rows"] == {"premium/shadow": 3} and s["reached"] == "first answers"
    assert Ledger.open(tmp_path / "none") is None  # no budget, no ledger
