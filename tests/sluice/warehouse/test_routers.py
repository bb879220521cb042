"""Router versions kept in the warehouse: registered from its labels, promoted only when they beat the promoted
version on held-out folds, promoted or rolled back by hand, restored anywhere."""

import polars as pl
from typer.testing import CliRunner

from sluice.cli import app
from sluice.stages.route.learned import load_router
from sluice.warehouse.db import connect
from sluice.warehouse.labels import add_labels
from sluice.warehouse.routers import list_routers, promoted_version, restore
from tests.support.routing_prompts import EASY, HARD


def store_labels(path, run_id, cheap_ok):
    prompts = EASY + HARD
    with connect(path) as con:
        add_labels(con, pl.DataFrame({"run_id": [run_id] * len(prompts), "row_id": [f"r{i}" for i in range(24)],
                                      "prompt": prompts, "cheap_ok": cheap_ok, "source": ["shadow"] * 24}))


def train(path, out):
    return CliRunner().invoke(app, ["router", "train", "--from-warehouse", str(path), "-o", str(out),
                                    "--no-embeddings", "--l2-text", "1", "--register"])


def test_versions_are_promoted_on_held_out_folds_and_rolled_back(tmp_path):
    wh = tmp_path / "wh.duckdb"
    store_labels(wh, "night-1", [True] * 12 + [False] * 12)
    first = train(wh, tmp_path / "r1")
    assert first.exit_code == 0, first.output
    assert "router version 1: promoted: no router yet" in first.output and promoted_version(wh) == 1
    # night 2: more of the same labels: the candidate cannot beat the promoted version on them (it scores 1.0)
    store_labels(wh, "night-2", [True] * 12 + [False] * 12)
    second = train(wh, tmp_path / "r2")
    assert second.exit_code == 0, second.output
    versions = list_routers(wh)
    assert versions["version"].to_list() == [1, 2] and versions["promoted"].to_list() == [True, False]
    assert versions["replaces"].to_list() == [None, 1] and versions["labels"].to_list() == [24, 48]
    assert versions["reason"][1].startswith("not promoted: held-out AUROC")
    assert versions["previous_auroc"][1] == 1.0 and versions["cv_auroc"][1] <= 1.0
    # by hand, then back
    assert CliRunner().invoke(app, ["router", "promote", "2", "--warehouse", str(wh)]).exit_code == 0
    assert promoted_version(wh) == 2
    back = CliRunner().invoke(app, ["router", "rollback", "--warehouse", str(wh)])
    assert back.exit_code == 0 and "router version 1 promoted" in back.output and promoted_version(wh) == 1
    listed = CliRunner().invoke(app, ["router", "list", "--warehouse", str(wh)])
    assert listed.exit_code == 0 and "version" in listed.output
    assert list_routers(wh)["reason"][0] == "rollback from version 2"
    # a kept version is the whole router: restored elsewhere, it scores like the one trained
    restored = load_router(restore(wh, 1, tmp_path / "restored"))
    original = load_router(tmp_path / "r1")
    assert restored.score(pl.Series(HARD[:3])).tolist() == original.score(pl.Series(HARD[:3])).tolist()


def test_nothing_to_roll_back_is_said_plainly(tmp_path):
    wh = tmp_path / "wh.duckdb"
    store_labels(wh, "night-1", [True] * 12 + [False] * 12)
    train(wh, tmp_path / "r1")
    res = CliRunner().invoke(app, ["router", "rollback", "--warehouse", str(wh)])
    assert res.exit_code == 2 and "version 1 replaced none" in res.output


def test_when_the_traffic_changes_the_candidate_that_fits_it_is_promoted(tmp_path):
    wh = tmp_path / "wh.duckdb"
    store_labels(wh, "night-1", [True] * 12 + [False] * 12)
    train(wh, tmp_path / "r1")
    with connect(wh) as con:
        con.execute("DELETE FROM router_training")
    store_labels(wh, "night-2", [False] * 12 + [True] * 12)  # the cheap tier now fails the short prompts
    res = train(wh, tmp_path / "r2")
    versions = list_routers(wh)
    assert res.exit_code == 0 and versions["promoted"].to_list() == [False, True]
    assert versions["reason"][1].startswith("promoted: held-out AUROC") and versions["replaces"][1] == 1
    assert versions["cv_auroc"][1] > versions["previous_auroc"][1]



def test_a_version_registered_by_hand_counts_new_labels_from_the_newest_it_learned(tmp_path):
    from sluice.warehouse.routers import new_labels

    wh = tmp_path / "wh.duckdb"
    store_labels(wh, "night-1", [True] * 12 + [False] * 12)
    assert new_labels(wh) == (24, None)
    train(wh, tmp_path / "r1")
    assert new_labels(wh) == (0, 1)
    store_labels(wh, "night-2", [True] * 12 + [False] * 12)
    assert new_labels(wh) == (24, 1)


def test_what_a_run_routed_with_is_recorded_and_read_back_for_the_next_run_of_its_dataset(tmp_path):
    import json

    from sluice.warehouse.routers import last_run, record_run_routing

    wh = tmp_path / "wh.duckdb"
    assert last_run(wh, "d") is None
    with connect(wh) as con:
        for run_id, dataset, day in (("a", "d", 1), ("b", "d", 2), ("c", "other", 3)):
            con.execute("INSERT INTO runs (run_id, dataset, started_at, finished_at, min_quality, quality_low, "
                        "quality_alert) VALUES (?, ?, ?, ?, 0.9, 0.8, 'under')",
                        [run_id, dataset, f"2026-01-0{day} 02:00:00+00", f"2026-01-0{day} 03:00:00+00"])
    routing = {"router": "version 3 (promoted)", "router_version": 3, "mode": "share", "premium_share": 0.4}
    loop = {"setting": "premium_share", "from": 0.3, "to": 0.4, "why": "run a: under", "after_run": "a"}
    record_run_routing(wh, "b", 3, routing, loop)
    assert last_run(wh, "d") == {"run_id": "b", "min_quality": 0.9, "quality_low": 0.8, "quality_alert": "under",
                                 "routing": routing, "quality_loop": loop}
    with connect(wh, read_only=True) as con:
        stored = con.execute("SELECT router_version, routing, quality_loop FROM runs WHERE run_id = 'b'").fetchone()
    assert stored[0] == 3 and json.loads(stored[1]) == routing and json.loads(stored[2]) == loop
