"""The cache index at scale: tonight's rows against 1M cached answers, looked up (the index) or all loaded (before).

    .venv/bin/python bench/cache_index.py                        # 1M entries, tonight 10k and 100k rows
    .venv/bin/python bench/cache_index.py --entries 200000 --tonight 10000

The warehouse is built once under /tmp/sluice-cache-index: the real migrations, then answered rows written straight
into `results` (10 runs, one a night, prompts from bench/scale.py's generated file: real ShareGPT, GSM8K,
self-instruct and MT-bench prompts, and past the first pass through them a real prompt with one random edit), then
indexed by the landing hook's own function (`index_answers`). Tonight is another generated file (seed 1) over the
same prompts, so it shares exact, near and semantic matches with the cached nights.

Each measurement is a child process (wall time, and its own peak RSS from getrusage):

    lookup      the cache stage's read: `cache_candidates` (the index) against `load_cache_entries` (everything)
    dedup       the whole dedup stage with the cache, both ways, and whether every row's dup_of, dup_kind,
                dup_score and cache_response agree. The MiniLM decision pass is given the static vectors as its
                embedder (per text, no batching effects; MiniLM would take longer on the same rows either way): the
                candidate search, which the index narrows, is the real one.

The first lookup also builds the ANN file beside the warehouse (timed on its own: `ann_build`). Timings are
wall-clock on a shared 2-core machine; the 1-minute load average before and after is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
OUT = ROOT / "bench" / "results"
TMP = Path("/tmp/sluice-cache-index")
RUNS = 10


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def warehouse_path(entries: int) -> Path:
    return TMP / f"wh_{entries}.duckdb"


def build(entries: int) -> dict:
    """The warehouse of `entries` answered rows, indexed; returns how long each part took."""
    import polars as pl
    from scale import prompt_file

    from sluice.contracts.columns import DEFAULT_MAX_TOKENS as DMT
    from sluice.stages.dedup.cache_index import index_answers
    from sluice.stages.dedup.deduplicate import request_fingerprint, request_key
    from sluice.warehouse.db import connect

    wh = warehouse_path(entries)
    if wh.exists():
        return json.loads(wh.with_suffix(".json").read_text())
    TMP.mkdir(parents=True, exist_ok=True)
    src = pl.read_parquet(prompt_file(entries, seed=0))
    t0 = time.perf_counter()
    per_run = -(-entries // RUNS)
    now = datetime.now(timezone.utc)
    with connect(wh) as con:
        for k in range(RUNS):
            part = src.slice(k * per_run, per_run).with_row_index("row_index")
            run_id = f"night{k:02d}"
            rows = part.select(
                pl.lit(run_id).alias("run_id"), pl.lit("bench").alias("dataset"), pl.col("id").alias("row_id"),
                pl.col("row_index").cast(pl.Int64), "prompt", pl.col("max_tokens").cast(pl.Int32),
                ("answer to " + pl.col("id")).alias("response"), pl.lit("small").alias("tier"),
                pl.lit("small-model").alias("model"), pl.lit("ok").alias("status"),
                pl.lit(0.001).alias("cost_usd"), pl.lit(0.01).alias("baseline_cost_usd"))
            con.register("_rows", rows.to_arrow())
            con.execute("INSERT INTO results BY NAME SELECT * FROM _rows")
            con.unregister("_rows")
            con.execute("INSERT INTO runs (run_id, dataset, finished_at, rows) VALUES (?, 'bench', ?, ?)",
                        [run_id, now - timedelta(days=RUNS - k), part.height])
    landed = time.perf_counter() - t0
    t0 = time.perf_counter()
    indexed = index_answers(wh, request_key(DMT), request_fingerprint(DMT), DMT)
    info = {"entries": indexed, "write_rows_s": round(landed, 1), "index_s": round(time.perf_counter() - t0, 1),
            "warehouse_mb": round(wh.stat().st_size / 2**20, 1)}
    wh.with_suffix(".json").write_text(json.dumps(info))
    return info


def child(mode: str, entries: int, tonight: int, out: str) -> None:
    """One measurement, in this process; prints a JSON line (its peak RSS included)."""
    import polars as pl
    import pyarrow.parquet as pq
    from scale import prompt_file

    from sluice.contracts.columns import DEFAULT_MAX_TOKENS as DMT
    from sluice.stages.dedup.cache import CacheConfig, load_cache_entries
    from sluice.stages.dedup.cache_index import cache_candidates
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate, request_fingerprint, request_key
    from sluice.stages.ingest.read import validate_prompts

    wh = warehouse_path(entries)
    table = validate_prompts(pq.read_table(prompt_file(tonight, seed=1)))
    cfg = DedupConfig(stages=("exact", "near", "semantic", "cache"), cache=CacheConfig(served_models={
        "small": "small-model"}))
    df = pl.from_arrow(table)
    from models.embeddings import static_embed

    t0 = time.perf_counter()
    static_embed(["warm up"])  # the static table (and tokenizer): loaded once per process, by the semantic stage too
    result: dict = {"mode": mode, "model_load_s": round(time.perf_counter() - t0, 2)}
    t0 = time.perf_counter()
    if mode == "lookup-index":
        got = cache_candidates(wh, cfg, df, request_key(DMT), request_fingerprint(DMT))
        result["entries_read"] = got.height
    elif mode == "lookup-all":
        result["entries_read"] = load_cache_entries(wh, cfg.cache, DMT).height
    else:
        import sluice.stages.dedup.deduplicate  # noqa: F401

        module = sys.modules["sluice.stages.dedup.deduplicate"]
        if mode == "dedup-all":
            module.cache_candidates = lambda *a: cache_candidates(*a, use_index=False)
        out_table = pl.from_arrow(deduplicate(table, cfg, warehouse=wh, embedder=static_embed))
        out_table.select("row_id", "status", "dup_of", "dup_kind", "dup_score", "cache_response").write_parquet(out)
        result["cache_hits"] = int((out_table["dup_kind"] == "cache").sum())
        result["kinds"] = out_table["dup_kind"].value_counts().sort("dup_kind").to_dicts()
    result["seconds"] = round(time.perf_counter() - t0, 2)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def measure(mode: str, entries: int, tonight: int) -> dict:
    out = TMP / f"{mode}_{entries}_{tonight}.parquet"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--entries", str(entries), "--tonight",
                           str(tonight), "--out", str(out)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        return {"mode": mode, "rc": proc.returncode, "error": proc.stderr.strip().splitlines()[-3:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["wall_s"] = round(time.perf_counter() - start, 1)  # with the child's imports
    return result


def agreement(entries: int, tonight: int) -> dict:
    import polars as pl

    a = pl.read_parquet(TMP / f"dedup-index_{entries}_{tonight}.parquet")
    b = pl.read_parquet(TMP / f"dedup-all_{entries}_{tonight}.parquet")
    same = (a.fill_null(-1) == b.fill_null(-1)) if a.columns == b.columns else None
    differ = int((~same.select(pl.all_horizontal(pl.all())).to_series()).sum()) if same is not None else -1
    return {"rows": a.height, "rows_differing": differ, "identical": differ == 0}


def render(data: dict) -> str:
    b = data["build"]
    lines = ["# The cache index at scale (bench/cache_index.py)", "",
             f"{data['entries']:,} cached answers in 10 nightly runs ({b['warehouse_mb']} MB warehouse); tonight is "
             "a generated file over the same prompts. Each figure is one child process: wall time of the step and "
             "the process's peak RSS (getrusage), the static-vector model (the semantic stage loads it anyway) "
             "loaded before the clock starts and included in the RSS. 2-core machine shared with other engineers' "
             f"jobs: 1-min load average {data['load_before'][0]} before, {data['load_after'][0]} after.", "",
             "| step | tonight | entries read | seconds | peak RSS MB |", "|---|---|---|---|---|"]
    ann = data.get("ann_build_lookup", {})
    for r in [{**ann, "tonight": f"{ann.get('tonight', '')} (first lookup: builds the ANN file)"}] + data["cases"]:
        mode = {"lookup-index": "lookup, index", "lookup-all": "load all (before)", "dedup-index":
                "dedup stage, index", "dedup-all": "dedup stage, load all (before)"}.get(r.get("mode"), r.get("mode"))
        if "error" in r:
            lines.append(f"| {mode} | {r.get('tonight')} | failed: {r['error'][-1]} | | |")
            continue
        lines.append(f"| {mode} | {r.get('tonight')} | {r.get('entries_read', r.get('cache_hits', ''))}"
                     f"{' (cache hits)' if 'cache_hits' in r else ''} | {r['seconds']} | {r['peak_rss_mb']} |")
    lines += ["", f"Indexing at landing: {b['entries']:,} entries in {b['index_s']} s (one-time backfill here; a "
              f"night indexes only its own rows). Writing the rows themselves took {b['write_rows_s']} s."]
    ag = data.get("agreement")
    if ag:
        lines += ["", f"Same hits: the whole dedup stage, tonight {ag['tonight']:,} rows, indexed vs load-all: "
                  f"{ag['rows_differing']} of {ag['rows']:,} rows differ in status, dup_of, dup_kind, dup_score or "
                  f"cache_response ({'identical' if ag['identical'] else 'NOT identical'})."]
    lines += data.get("notes", [])
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--tonight", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dedup-tonight", type=int, default=10_000, help="tonight's rows for the whole-stage run")
    ap.add_argument("--child")
    ap.add_argument("--out")
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args()
    if args.markdown_only:
        data = json.loads((OUT / "cache_index.json").read_text())
        (OUT / "cache_index.md").write_text(render(data))
        return
    if args.child:
        child(args.child, args.entries, args.tonight[0], args.out)
        return
    data = {"entries": args.entries, "load_before": load(), "build": build(args.entries), "cases": []}
    print(json.dumps(data["build"]), flush=True)
    ann = {**measure("lookup-index", args.entries, args.tonight[0]), "tonight": args.tonight[0]}  # builds the ANN
    data["ann_build_lookup"] = ann
    print(json.dumps(ann), flush=True)
    for n in args.tonight:
        for mode in ("lookup-index", "lookup-all"):
            r = {**measure(mode, args.entries, n), "tonight": n}
            data["cases"].append(r)
            print(json.dumps(r), flush=True)
    n = args.dedup_tonight
    if n:
        for mode in ("dedup-index", "dedup-all"):
            r = {**measure(mode, args.entries, n), "tonight": n}
            data["cases"].append(r)
            print(json.dumps(r), flush=True)
        data["agreement"] = {"tonight": n, **agreement(args.entries, n)}
    data["load_after"] = load()
    OUT.mkdir(exist_ok=True)
    (OUT / "cache_index.json").write_text(json.dumps(data, indent=1))
    (OUT / "cache_index.md").write_text(render(data))
    print(json.dumps(data.get("agreement")))


if __name__ == "__main__":
    main()
