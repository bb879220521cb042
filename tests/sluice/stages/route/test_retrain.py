"""Retraining after a run lands: only once enough labels have arrived since the last version was trained; the
candidate is registered with the labels it used, its score and the version it replaced, promoted only when it
beats the promoted one on held-out folds, and the reason is kept either way."""

import polars as pl

from sluice.config import RouterSettings
from sluice.stages.route.versions import retrain
from sluice.warehouse.db import connect
from sluice.warehouse.labels import add_labels
from sluice.warehouse.routers import list_routers, new_labels, promoted_version
from tests.support.routing_prompts import EASY, HARD

SETTINGS = RouterSettings(retrain_min_new_labels=20, retrain_embeddings=False)


def land_labels(wh, run_id, cheap_ok, prompts=EASY + HARD):
    with connect(wh) as con:
        add_labels(con, pl.DataFrame({"run_id": run_id, "row_id": [f"r{i}" for i in range(len(prompts))],
                                      "prompt": prompts, "cheap_ok": cheap_ok, "source": "graded"}))


def test_a_router_is_retrained_once_enough_new_labels_have_arrived(tmp_path):
    wh = tmp_path / "wh.duckdb"
    land_labels(wh, "night-1", [True] * 6, EASY[:6])
    outcome = retrain(wh, SETTINGS, tmp_path / "c1", "night-1")
    assert outcome == {"trained": False, "new_labels": 6, "reason": "6 new labels (no version yet), under the 20 a "
                       "retraining needs (RouterSettings.retrain_min_new_labels)"}
    assert list_routers(wh).height == 0

    land_labels(wh, "night-2", [True] * 12 + [False] * 12)
    outcome = retrain(wh, SETTINGS, tmp_path / "c2", "night-2")
    assert (outcome["trained"], outcome["version"], outcome["promoted"], outcome["new_labels"]) == (True, 1, True, 30)
    first = list_routers(wh).row(0, named=True)
    assert first["labels"] == 30 and first["replaces"] is None and first["promoted"]
    assert first["reason"].startswith("after run night-2 (30 new labels (no version yet)): promoted: no router yet")
    assert new_labels(wh) == (0, 1)

    # nothing new: nothing trained, and the reason says so
    again = retrain(wh, SETTINGS, tmp_path / "c3", "night-3")
    assert again["trained"] is False and again["reason"].startswith("0 new labels since version 1")

    # the same traffic again: the candidate cannot beat the promoted version (it ranks these perfectly)
    land_labels(wh, "night-4", [True] * 12 + [False] * 12)
    assert new_labels(wh) == (24, 1)
    kept = retrain(wh, SETTINGS, tmp_path / "c4", "night-4")
    assert (kept["trained"], kept["version"], kept["promoted"]) == (True, 2, False)
    second = list_routers(wh).row(1, named=True)
    assert (second["labels"], second["replaces"], second["previous_auroc"]) == (54, 1, 1.0)
    assert second["reason"].startswith("after run night-4 (24 new labels since version 1): not promoted: held-out "
                                       "AUROC")
    assert promoted_version(wh) == 1
    # counted from the last version, promoted or not: the rejected candidate's labels do not retrain it again
    assert new_labels(wh) == (0, 2)


def test_labels_that_cannot_train_a_router_are_recorded_as_the_reason(tmp_path):
    wh = tmp_path / "wh.duckdb"
    land_labels(wh, "night-1", [True] * 24)  # the cheap tier was right every time: nothing to learn
    outcome = retrain(wh, SETTINGS, tmp_path / "c", "night-1")
    assert outcome["trained"] is False and outcome["new_labels"] == 24
    assert outcome["reason"].startswith("24 new labels (no version yet), but not trained: labels need both outcomes")
    assert list_routers(wh).height == 0


def test_a_promoted_version_this_sluice_cannot_read_is_replaced_and_the_reason_says_so(tmp_path):
    from sluice.warehouse.routers import register

    wh = tmp_path / "wh.duckdb"
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "router.json").write_text('{"format": 1}')
    register(wh, odd, labels=0, target="x", cv_auroc=0.5, previous_auroc=None, promote=True, reason="by hand")
    land_labels(wh, "night-1", [True] * 12 + [False] * 12)
    outcome = retrain(wh, SETTINGS, tmp_path / "c", "night-1")
    assert (outcome["trained"], outcome["version"], outcome["promoted"]) == (True, 2, True)
    assert list_routers(wh)["reason"][1].startswith("after run night-1 (24 new labels since version 1): the "
                                                    "promoted version 1 cannot be read; promoted: no router yet")


def test_the_candidate_is_of_the_promoted_versions_kind(tmp_path):
    from sluice.stages.route.choose import train
    from sluice.stages.route.learned import load_router
    from sluice.stages.route.per_tier import PerTierRouter
    from sluice.stages.route.versions import register_candidate
    from sluice.warehouse.routers import restore

    wh = tmp_path / "wh.duckdb"
    prompts = EASY + HARD
    cheap_ok = [True] * 12 + [False] * 12
    with connect(wh) as con:
        add_labels(con, pl.DataFrame({"run_id": "night-1", "row_id": [f"r{i}" for i in range(24)], "prompt": prompts,
                                      "cheap_ok": cheap_ok, "premium_ok": [True] * 24, "source": "shadow"}))
    labels = pl.DataFrame({"prompt": prompts, "cheap_ok": cheap_ok, "premium_ok": [True] * 24})
    first = train("per-tier", labels, use_embeddings=False)
    version, verdict = register_candidate(wh, first.save(tmp_path / "v1"), labels, kind="per-tier")
    assert (version, verdict.promote) == (1, True) and verdict.cv_auroc > 0.9  # cross-validated as per-tier
    with connect(wh) as con:
        add_labels(con, pl.DataFrame({"run_id": "night-2", "row_id": [f"s{i}" for i in range(24)],
                                      "prompt": prompts, "cheap_ok": cheap_ok, "premium_ok": [True] * 24,
                                      "source": "shadow"}))
    outcome = retrain(wh, SETTINGS, tmp_path / "c2", "night-2")
    assert outcome["trained"] and outcome["version"] == 2
    assert isinstance(load_router(restore(wh, 2, tmp_path / "restored")), PerTierRouter)
