"""Dedup speed and memory on a prompt corpus built from ../shared/data (see bench/dedup_corpus.py).

Each measurement runs in its own subprocess, so its peak RSS (ru_maxrss) is its own:

    cheap N      exact + near stages of `sluice.stages.dedup.deduplicate.deduplicate` (what the flow runs before semantic), N rows;
                 timed parts: shingle hashing, signatures (numba kernel, on all numba threads and again on one,
                 to compare with single-threaded rensa), LSH banding, verification + guards (worker processes
                 counted). The one-off per-process setup (numba import, loading the cached compiled kernels) is
                 timed on its own before the stage, so "peak - before" is what the rows cost
    rensa        the same shingle hashes through rensa 0.5 (RMinHash digest matrix + RMinHashLSH duplicate flags,
                 16 bands x 8 rows: rensa needs bands to divide num_perm), 100k rows
    datasketch   the same shingle hashes through datasketch 2.0 with one `MinHash.update` call per shingle,
                 then `MinHashLSH` insert and query (its own 14 x 9 bands): run on the first 10k of the 100k rows
                 and scaled linearly (a per-shingle Python call takes ~20 min for 100k rows here)
    semantic N   exact + near + semantic stages on N rows with torch on 2 threads; semantic time = total minus
                 the cheap stages measured in the same process; split into static candidate vectors, search,
                 MiniLM on candidate rows
    semantic_plan 100k  the semantic stage at full size with MiniLM replaced by a counter: static vectors, search
                 and guards are timed for real, and the rows and word pieces MiniLM would embed are counted; the
                 MiniLM time is projected from 1,000 of those rows embedded for real in the same process; run
                 only when the semantic stage itself was measured on fewer than 100k rows

Ratios compare like with like: the MinHash + LSH candidate part (signatures and banding, no guards) against
rensa's and datasketch's MinHash + LSH on the same shingles; the whole exact+near stage is also given against
"exact stage + rensa MinHash/LSH". Timings are wall-clock on a shared 2-core machine: read them as orders of
magnitude, and never assert them in tests.

    .venv/bin/python bench/dedup_speed.py            # writes bench/results/dedup_speed.json and .md
    .venv/bin/python bench/dedup_speed.py --quick    # 10k and 100k only (no 1M row run)
    .venv/bin/python bench/dedup_speed.py --semantic-rows=2000   # semantic stage on fewer rows
    .venv/bin/python bench/dedup_speed.py --cheap-only   # exact+near at 10k/100k/1M, rensa, datasketch; the
                                                         # semantic sections are kept from the last JSON
    .venv/bin/python bench/dedup_speed.py --markdown-only   # re-render the .md from the JSON
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "results"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    """Peak RSS since the last `_reset_peak` (VmHWM), else since the process started (ru_maxrss)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _reset_peak() -> bool:
    """Start the peak over from the current RSS (Linux: writing 5 to clear_refs resets VmHWM), so the peak is the
    stage's, not that of building the corpus before it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def measure(kind: str, n: int) -> dict:
    import numpy as np

    from bench.dedup_corpus import prompt_corpus
    from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate, exact_duplicates
    from sluice.stages.dedup.minhash import shingle_hashes, signatures
    from sluice.stages.dedup.near import NearConfig, near_duplicate_pairs
    from sluice.stages.ingest.read import validate_prompts

    table = validate_prompts(prompt_corpus(n))
    texts = table["prompt"].to_pylist()
    cfg = NearConfig()
    t = time.perf_counter
    setup: dict = {}
    if kind == "cheap":
        # once per process, whatever the rows: numba import and the compiled kernels loaded from their cache
        from sluice.stages.dedup import near

        rss0, t0 = _rss_mb(), t()
        near.near_duplicate_pairs(["warm up the kernels", "warm up the kernel"], np.zeros(2, np.int64),
                                  np.ones(2, bool), np.ones(2, bool))
        near._compiled_pair_kernels()[1](2, np.array([1]), np.array([0]))  # components (parallel verification)
        setup = {"setup_seconds": round(t() - t0, 2), "setup_rss_mb": round(_rss_mb() - rss0, 1)}
    import gc

    gc.collect()
    base_rss = _rss_mb()
    out: dict = {"kind": kind, "rows": n, "rss_before_stage_mb": round(base_rss, 1), **setup,
                 "peak_is_stage_only": _reset_peak(),
                 "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}
    if kind == "cheap":
        t0 = t()
        marked = deduplicate(table, DedupConfig(stages=("exact", "near")))
        out["stage_seconds"] = round(t() - t0, 2)
        out["peak_rss_mb"] = round(_peak_mb(), 1)
        kinds = marked["dup_kind"].to_pylist()
        out["duplicates"] = {k: kinds.count(k) for k in ("exact", "near")}
        # the parts, measured again on the same data
        t0 = t()
        exact = exact_duplicates(table)
        out["exact_seconds"] = round(t() - t0, 2)
        pending = np.array([s == "pending" for s in exact["status"].to_pylist()])
        found = near_duplicate_pairs(texts, np.zeros(n, np.int64), pending, pending, cfg)
        out["near_stage_seconds"] = round(sum(found.seconds.values()), 2)
        out["shingle_seconds"] = found.seconds["shingles"]
        out["signature_seconds"] = found.seconds["signatures"]
        out["lsh_seconds"] = found.seconds["lsh"]
        out["verify_guard_seconds"] = found.seconds.get("verify_and_guards", 0.0)
        out["verify_workers"] = found.workers
        import numba

        out["numba_threads"] = numba.get_num_threads()
        hashes, off = shingle_hashes(texts, cfg)
        numba.set_num_threads(1)
        t0 = t()
        signatures(hashes, off, cfg)
        out["signature_seconds_1_thread"] = round(t() - t0, 3)
        numba.set_num_threads(out["numba_threads"])
        out["lsh_verify_guard_seconds"] = round(out["lsh_seconds"] + out["verify_guard_seconds"], 2)
        out["near_guard_vetoes"] = found.vetoed
        out["shingles"] = int(sum(len(t.split()) for t in texts))  # words, an upper bound on word bigrams
    elif kind == "rensa":
        import rensa

        hashes, off = shingle_hashes(texts, cfg)
        t0 = t()
        digest = rensa.RMinHash.digest_matrix_from_flat_token_hashes(
            hashes.astype(np.uint64), off.astype(np.uint64), num_perm=cfg.num_perm, seed=cfg.seed)
        out["signature_seconds"] = round(t() - t0, 2)
        t0 = t()
        lsh = rensa.RMinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, num_bands=16)
        flags = lsh.insert_matrix_and_query_duplicate_flags(digest)
        out["lsh_seconds"] = round(t() - t0, 2)
        out["flagged_rows"] = int(sum(flags))
        out["peak_rss_mb"] = round(_peak_mb(), 1)
    elif kind == "datasketch":
        from datasketch import MinHash, MinHashLSH

        hashes, off = shingle_hashes(texts, cfg)
        # one Python call per shingle is ~100x slower than the rest: run it on the first tenth of the same rows
        # and scale by shingle count (its cost is linear in shingles; LSH insert/query linear in rows)
        sample = max(1, n // 10)
        hl = hashes[:off[sample]].tolist()
        a, b = off[:sample].tolist(), off[1:sample + 1].tolist()
        t0 = t()
        sketches = []
        for lo, hi in zip(a, b):
            m = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=lambda h: h)
            for h in hl[lo:hi]:
                m.update(h)
            sketches.append(m)
        measured_sig = t() - t0
        t0 = t()
        lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
        with lsh.insertion_session() as session:
            for i, m in enumerate(sketches):
                if hl[a[i]:b[i]]:
                    session.insert(i, m, check_duplication=False)
        flagged = sum(1 for i, m in enumerate(sketches) if hl[a[i]:b[i]] and len(lsh.query(m)) > 1)
        measured_lsh = t() - t0
        out["sampled_rows"] = sample
        out["sampled_shingles"] = int(off[sample])
        out["measured_signature_seconds"] = round(measured_sig, 2)
        out["measured_lsh_seconds"] = round(measured_lsh, 2)
        out["signature_seconds"] = round(measured_sig * len(hashes) / max(int(off[sample]), 1), 2)
        out["lsh_seconds"] = round(measured_lsh * n / sample, 2)
        out["extrapolated"] = True
        out["flagged_rows_in_sample"] = flagged
        out["peak_rss_mb"] = round(_peak_mb(), 1)
    elif kind == "semantic":
        import torch

        torch.set_num_threads(2)
        from models.embeddings import _load, embed, static_embed, static_table
        from sluice.stages.dedup import semantic as sem

        def timed(fn, calls, count_pieces=False):
            """`fn` that adds its rows and seconds (and MiniLM word pieces) to `calls`."""
            def wrapper(batch):
                t1 = t()
                vec = fn(batch)
                calls["rows"] += len(batch)
                calls["seconds"] += t() - t1
                if count_pieces:
                    calls["pieces"] = calls.get("pieces", 0) + sum(
                        min(len(p), 128) for p in _load()[0](list(batch))["input_ids"])
                return vec
            return wrapper

        calls = {"rows": 0, "seconds": 0.0}
        static_calls = {"rows": 0, "seconds": 0.0}
        timed_embed = timed(embed, calls, count_pieces=True)
        timed_static = timed(static_embed, static_calls)

        sem._default_candidate_embedder = timed_static
        t0 = t()
        static_table()  # built once per machine (cached in ~/.cache/sluice), then loaded
        out["static_table_load_seconds"] = round(t() - t0, 2)
        embed(["warm up"])  # model load is not part of the stage
        t0 = t()
        cheap = deduplicate(table, DedupConfig(stages=("exact", "near")))
        cheap_s = t() - t0
        t0 = t()
        marked = deduplicate(table, DedupConfig(stages=("exact", "near", "semantic")), embedder=timed_embed)
        total = t() - t0
        out["cheap_seconds"] = round(cheap_s, 2)
        out["semantic_seconds"] = round(total - cheap_s, 2)
        out["embedded_rows"] = calls["rows"]
        out["embed_seconds"] = round(calls["seconds"], 2)
        out["embedded_pieces"] = calls.get("pieces", 0)
        out["static_rows"] = static_calls["rows"]
        out["static_seconds"] = round(static_calls["seconds"], 2)
        out["search_and_guard_seconds"] = round(total - cheap_s - calls["seconds"] - static_calls["seconds"], 2)
        out["candidate_threshold"] = sem.SemanticConfig().candidate_threshold
        kinds = marked["dup_kind"].to_pylist()
        out["duplicates"] = {k: kinds.count(k) for k in ("exact", "near", "semantic")}
        out["semantic_max_words"] = sem.SemanticConfig().max_words
        out["torch_threads"] = torch.get_num_threads()
        out["peak_rss_mb"] = round(_peak_mb(), 1)
    elif kind in ("typos_words", "typos_chars"):
        # the near stage on word bigrams only (before) or with character shingles for short prompts (after): what
        # the cheap stages catch, and how many rows are left to MiniLM (counted, not embedded; MiniLM's time is
        # projected from 1,000 of those rows embedded for real in the same process)
        from models.embeddings import _load, embed, static_table

        near_cfg = NearConfig(char_max_words=0) if kind == "typos_words" else NearConfig()
        tok, _ = _load()
        static_table()
        calls = {"rows": 0}
        sample: list[str] = []

        def counting(batch):
            calls["rows"] += len(batch)
            sample.extend(batch)
            return np.zeros((len(batch), 384), np.float32)

        # one-off per-process setup outside the timings: compiled kernels loaded, the embedding tables read
        warm = validate_prompts(prompt_corpus(2000, seed=1))
        deduplicate(warm, DedupConfig(stages=("exact", "near", "semantic"), near=near_cfg), embedder=counting)
        calls["rows"] = 0
        sample.clear()
        out["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        t0 = t()
        cheap = deduplicate(table, DedupConfig(stages=("exact", "near"), near=near_cfg))
        cheap_s = t() - t0
        t0 = t()
        marked = deduplicate(table, DedupConfig(stages=("exact", "near", "semantic"), near=near_cfg),
                             embedder=counting)
        out["near_config"] = {"char_max_words": near_cfg.char_max_words, "char_shingle": near_cfg.char_shingle}
        out["cheap_seconds"] = round(cheap_s, 2)
        out["semantic_without_minilm_seconds"] = round(t() - t0 - cheap_s, 2)
        out["minilm_rows"] = calls["rows"]
        kinds = cheap["dup_kind"].to_pylist()
        out["cheap_duplicates"] = {k: kinds.count(k) for k in ("exact", "near")}
        kinds = marked["dup_kind"].to_pylist()
        out["duplicates"] = {k: kinds.count(k) for k in ("exact", "near", "semantic")}
        import torch

        torch.set_num_threads(2)
        embed(["warm up"])
        picked = [sample[i] for i in np.random.default_rng(0).permutation(len(sample))[:1000]]
        t0 = t()
        embed(picked)
        rate = len(picked) / max(t() - t0, 1e-9)
        out["minilm_rows_per_s"] = round(rate, 1)
        out["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out["projected_stage_seconds"] = round(cheap_s + out["semantic_without_minilm_seconds"] + calls["rows"] / rate, 1)
        out["peak_rss_mb"] = round(_peak_mb(), 1)
    elif kind == "semantic_plan":
        # everything of the semantic stage but MiniLM itself, at full size: the static pass, the search, the guards
        # and how many rows (and word pieces) MiniLM would have to embed
        from models.embeddings import _load, static_table

        tok, _ = _load()
        static_table()
        calls = {"rows": 0, "pieces": 0}
        sample: list[str] = []

        def counting(batch):
            calls["rows"] += len(batch)
            calls["pieces"] += sum(min(len(p), 128) for p in tok(list(batch))["input_ids"])
            sample.extend(batch)
            return np.zeros((len(batch), 384), np.float32)

        t0 = t()
        cheap = deduplicate(table, DedupConfig(stages=("exact", "near")))
        cheap_s = t() - t0
        t0 = t()
        deduplicate(table, DedupConfig(stages=("exact", "near", "semantic")), embedder=counting)
        out["cheap_seconds"] = round(cheap_s, 2)
        out["semantic_without_minilm_seconds"] = round(t() - t0 - cheap_s, 2)
        out["minilm_rows"] = calls["rows"]
        out["minilm_pieces"] = calls["pieces"]
        # MiniLM's speed on these very rows, now, in this process: a fixed random sample of the candidate rows
        import torch

        from models.embeddings import embed

        torch.set_num_threads(2)
        embed(["warm up"])
        picked = [sample[i] for i in np.random.default_rng(0).permutation(len(sample))[:1000]]
        t0 = t()
        embed(picked)
        out["minilm_sample_rows"] = len(picked)
        out["minilm_sample_seconds"] = round(t() - t0, 2)
        out["minilm_sample_pieces"] = sum(min(len(p), 128) for p in tok(picked)["input_ids"])
        out["pending_short_rows"] = int(sum(1 for s, p in zip(cheap["status"].to_pylist(), texts)
                                            if s == "pending" and len(p.split()) <= 48))
        out["peak_rss_mb"] = round(_peak_mb(), 1)
    return out


def typo_catch_rates() -> dict:
    """Share of QQP tuning questions (<= 16 words) with one letter swap in one word that the near stage itself (LSH
    included) marks as a near duplicate of the original: word bigrams vs character 4-grams."""
    import csv
    import random

    import numpy as np

    from bench.dedup_corpus import SHARED
    from sluice.stages.dedup.near import NearConfig, near_duplicate_pairs

    with open(SHARED / "pairs" / "qqp_dev.tsv", newline="") as f:
        questions = [r[3] for r in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                     if len(r) >= 6 and int(r[0]) % 5 in (0, 1)][:3000]
    rng, pairs = random.Random(0), []
    for q in questions:
        words = q.split(" ")
        if len(words) <= 3:
            continue
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
            if len(q.split()) <= 16:
                pairs.append((q, " ".join(words)))
    texts = [t for p in pairs for t in p]
    block = np.repeat(np.arange(len(pairs)), 2)  # each pair alone: only its own two rows can match
    ones = np.ones(len(texts), bool)
    out = {"pairs": len(pairs)}
    for name, cfg in (("word_bigrams", NearConfig(char_max_words=0)), ("character_4grams", NearConfig())):
        out[name] = round(len(near_duplicate_pairs(texts, block, ones, ones, cfg).dup) / len(pairs), 3)
    return out


def typos_main(n: int = 100_000) -> None:
    runs = [run_child(kind, n) for kind in ("typos_words", "typos_chars")]
    caught = typo_catch_rates()
    data = {"runs": runs, "typo_catch": caught}
    (OUT / "dedup_speed_typos.json").write_text(json.dumps(data, indent=2) + "\n")
    (OUT / "dedup_speed_typos.md").write_text(typos_markdown(data))
    print(typos_markdown(data))


def typos_markdown(data: dict) -> str:
    runs, caught = data["runs"], data["typo_catch"]
    ok = [r for r in runs if "error" not in r]
    rate = sum(r["minilm_rows_per_s"] for r in ok) / max(len(ok), 1)  # one MiniLM speed for both: like with like
    n = runs[0]["rows"]
    lines = ["# Typos early: the near stage on word bigrams vs character 4-grams for short prompts "
             "(bench/dedup_speed.py --typos)", "",
             f"{n} rows of the benchmark corpus (bench/dedup_corpus.py: real prompts plus one-edit variants, a sixth "
             "of them a letter swap), exact + near + semantic stages. MiniLM rows are counted, not embedded (so no "
             "semantic duplicates are found here); MiniLM's speed is measured on 1,000 of those rows in the same "
             "process, and the stage time projected at the two runs' mean speed, "
             f"{rate:.0f} rows/s, so the two compare like with like. Wall-clock on a shared 2-core machine (1-minute "
             "load average at the start of each run: " + ", ".join(str(r.get("loadavg_at_start", ["?"])[0]) for r in runs)
             + "): the rows are exact, the seconds rough.", "",
             "| near shingles | exact dups | near dups | rows left to MiniLM | exact+near s | semantic without MiniLM s "
             "| MiniLM rows/s measured | projected stage s |", "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        if "error" in r:
            lines.append(f"| {r['kind']} | error: {r['error'][-200:]} |")
            continue
        cmw = r["near_config"]["char_max_words"]
        name = "word 2-grams" if cmw == 0 else f"character {r['near_config']['char_shingle']}-grams (<= {cmw} words)"
        d = r["duplicates"]
        projected = r["cheap_seconds"] + r["semantic_without_minilm_seconds"] + r["minilm_rows"] / rate
        lines.append(f"| {name} | {d['exact']} | {d['near']} | {r['minilm_rows']} | {r['cheap_seconds']} | "
                     f"{r['semantic_without_minilm_seconds']} | {r['minilm_rows_per_s']} | {projected:.1f} |")
    lines += ["", f"Typos caught by the near stage itself (LSH included): of {caught['pairs']} QQP tuning questions "
              "(<= 16 words) with two neighbouring letters of one word swapped, word bigrams mark "
              f"{caught['word_bigrams']:.1%} as near duplicates of the original, character 4-grams "
              f"{caught['character_4grams']:.1%} (the rest: a guard objects, or the LSH misses a pair near the "
              "Jaccard threshold of 0.7, where two prompts become candidates about half the time)."]
    return "\n".join(lines) + "\n"


def run_child(kind: str, n: int, timeout: int = 1800) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "2", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, __file__, "--measure", kind, str(n)], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        return {"kind": kind, "rows": n, "error": proc.stderr[-2000:]}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result), flush=True)
    return result


def main(quick: bool, semantic_rows: int, cheap_only: bool = False) -> None:
    sizes = [10_000, 100_000] + ([] if quick else [1_000_000])
    cheap = [run_child("cheap", n) for n in sizes]
    rensa = run_child("rensa", 100_000)
    datasketch = run_child("datasketch", 100_000)
    semantic_from_earlier_run = cheap_only
    if cheap_only:  # the semantic sections stay those of the last full run
        last = json.loads((OUT / "dedup_speed.json").read_text())
        semantic, semantic_plan = last["semantic"], last.get("semantic_plan_100k")
    else:
        semantic = run_child("semantic", semantic_rows)
        # the projection is only needed when the semantic stage itself ran on fewer rows
        semantic_plan = run_child("semantic_plan", 100_000) if semantic_rows < 100_000 else None
    ours = next(c for c in cheap if c["rows"] == 100_000)
    ours_minhash_lsh = ours["signature_seconds"] + ours["lsh_seconds"]  # like rensa's: candidates, no guards
    ours_1_thread = ours.get("signature_seconds_1_thread", ours["signature_seconds"]) + ours["lsh_seconds"]
    ratios = {
        "signatures_vs_rensa": round(ours["signature_seconds"] / max(rensa["signature_seconds"], 1e-3), 1),
        "signatures_vs_datasketch_update": round(ours["signature_seconds"] / datasketch["signature_seconds"], 3),
        "minhash_lsh_vs_rensa": round(ours_minhash_lsh / (rensa["signature_seconds"] + rensa["lsh_seconds"]), 2),
        "minhash_lsh_1_thread_vs_rensa": round(ours_1_thread / (rensa["signature_seconds"] + rensa["lsh_seconds"]), 2),
        "minhash_lsh_vs_datasketch_update": round(
            ours_minhash_lsh / (datasketch["signature_seconds"] + datasketch["lsh_seconds"]), 3),
        "exact_near_stage_vs_exact_plus_rensa": round(ours["stage_seconds"] / (
            ours["exact_seconds"] + ours["shingle_seconds"] + rensa["signature_seconds"] + rensa["lsh_seconds"]), 1),
    }
    results = {"cheap_stages": cheap, "rensa": rensa, "datasketch_per_row_update": datasketch,
               "semantic": semantic, "semantic_plan_100k": semantic_plan, "ratios_100k": ratios, "cpu_count": os.cpu_count(),
               "semantic_from_earlier_run": semantic_from_earlier_run}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "dedup_speed.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "dedup_speed.md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict) -> str:
    loads = [c["loadavg_at_start"][0] for c in r["cheap_stages"] if "loadavg_at_start" in c]
    lines = ["# Dedup speed and memory (bench/dedup_speed.py)", "",
             f"Machine: {r['cpu_count']} cores, shared with other jobs (wall-clock timings are noisy"
             + (f"; 1-minute load average {min(loads)}-{max(loads)} when the cheap-stage runs started, the decaying "
                "tail of earlier work: nothing else heavy ran during this run" if loads else "")
             + ").", "",
             "## Exact + near stages (`deduplicate(stages=('exact','near'))`)", "",
             "| rows | words | stage s | exact s | shingling s | signatures s | LSH candidates s | verify+guards s | "
             "exact dups | near dups | RSS before MB | peak RSS MB (from before the stage) | "
             "peak - before, bytes/row | bytes/word |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in r["cheap_stages"]:
        if "error" in c:
            lines.append(f"| {c['rows']} | error: {c['error'][-200:]!r} |")
            continue
        per_row = (c["peak_rss_mb"] - c["rss_before_stage_mb"]) * 2**20 / c["rows"]
        lines.append(f"| {c['rows']} | {c['shingles']} | {c['stage_seconds']} | {c['exact_seconds']} | "
                     f"{c['shingle_seconds']} | {c['signature_seconds']} | {c['lsh_seconds']} | {c['verify_guard_seconds']} | "
                     f"{c['duplicates']['exact']} | {c['duplicates']['near']} | {c['rss_before_stage_mb']} | "
                     f"{c['peak_rss_mb']} | {per_row:.0f} | {per_row * c['rows'] / c['shingles']:.0f} |")
    per_row_words = ", ".join(f"{c['shingles'] / c['rows']:.0f}" for c in r["cheap_stages"] if "error" not in c)
    lines += ["", "The corpus's first rows are the real prompts (long ShareGPT turns), the rest short variations, "
              f"so words per row fall as rows grow ({per_row_words}): the stage's memory follows words, hence both columns."]
    c0 = next((c for c in r["cheap_stages"] if "setup_seconds" in c), None)
    if c0:
        lines += ["", f"Stage times are of the first call in a fresh process, after a one-off setup timed on its own "
                  f"(numba import and the cached compiled kernels: {c0['setup_seconds']} s, "
                  f"{c0['setup_rss_mb']} MB, once per process). The parts are measured again on the same rows "
                  "(one block). Signatures run on "
                  f"{c0.get('numba_threads')} numba threads; verification + guards (Python) on "
                  + ", ".join(f"{c['rows']} rows: {c.get('verify_workers')}"
                              for c in r["cheap_stages"] if "error" not in c)
                  + " process(es). On one numba thread, signatures took "
                  + ", ".join(f"{c.get('signature_seconds_1_thread')} s ({c['rows']} rows)"
                              for c in r["cheap_stages"] if "error" not in c) + "."]
    rs, ds = r["rensa"], r["datasketch_per_row_update"]
    lines += ["", "## MinHash + LSH on the same 100k rows and shingles", "",
              "| implementation | signatures s | LSH s | rows flagged | peak RSS MB |", "|---|---|---|---|---|",
              f"| rensa 0.5 (digest matrix, 16x8 bands) | {rs.get('signature_seconds')} | {rs.get('lsh_seconds')} | "
              f"{rs.get('flagged_rows')} | {rs.get('peak_rss_mb')} |",
              f"| datasketch 2.0, per-shingle `update`, MinHashLSH 14x9 | {ds.get('signature_seconds')} | "
              f"{ds.get('lsh_seconds')} | {ds.get('flagged_rows_in_sample')} (in its sample) | {ds.get('peak_rss_mb')} |", "",
              f"datasketch was run on the first {ds.get('sampled_rows')} rows ({ds.get('sampled_shingles')} shingles: "
              f"{ds.get('measured_signature_seconds')} s signatures, {ds.get('measured_lsh_seconds')} s LSH) and scaled "
              "linearly to all rows (per-shingle calls are linear in shingles; LSH insert/query in rows).", "",
              "Ratios (ours / reference, lower is better):", ""]
    lines += [f"- {k}: {v}" for k, v in r["ratios_100k"].items()]
    lines += [f"\n{note}" for note in r.get("notes", [])]
    if r.get("semantic_from_earlier_run"):
        lines += ["", "The semantic sections below are from the last full run (not re-measured with the cheap stages "
                  "above; their cheap-stage seconds are that run's)."]
    s = r["semantic"]
    if "error" in s:
        lines += ["", f"Semantic run failed: {s['error'][-500:]}"]
    else:
        per_row = s["embed_seconds"] / max(s["embedded_rows"], 1)
        lines += ["", f"## Semantic stage, {s['rows']} rows", "",
                  f"- semantic stage: {s['semantic_seconds']} s on {s['torch_threads']} torch threads (target at "
                  f"100k rows: <= 180 s on 2 cores); cheap stages before it {s['cheap_seconds']} s",
                  f"- candidates: {s['static_rows']} short pending rows given static vectors (distilled from MiniLM) "
                  f"in {s['static_seconds']} s; blocked search (static cosine >= {s['candidate_threshold']}) + "
                  f"MiniLM scoring of candidate pairs + guards {s['search_and_guard_seconds']} s",
                  f"- decision: {s['embedded_rows']} candidate rows embedded with MiniLM in {s['embed_seconds']} s "
                  f"({1 / per_row if per_row else 0:.1f} rows/s here)",
                  f"- static table load {s['static_table_load_seconds']} s (a one-off build per machine when missing)",
                  f"- duplicates: {s['duplicates']}; prompts over {s['semantic_max_words']} words are left to "
                  "exact/near", f"- peak RSS {s['peak_rss_mb']} MB (model included)"]
    p = r.get("semantic_plan_100k")
    if p and "error" not in p and p.get("minilm_sample_pieces"):
        per_piece = p["minilm_sample_seconds"] / p["minilm_sample_pieces"]
        projected = p["semantic_without_minilm_seconds"] + per_piece * p["minilm_pieces"]
        lines += ["", f"## Semantic stage on {p['rows']} rows: everything but MiniLM measured, MiniLM projected", "",
                  f"- {p['pending_short_rows']} short rows still pending after exact+near (cheap stages "
                  f"{p['cheap_seconds']} s); static vectors, blocked search, guards: "
                  f"{p['semantic_without_minilm_seconds']} s; peak RSS {p['peak_rss_mb']} MB (no MiniLM loaded)",
                  f"- MiniLM would embed {p['minilm_rows']} candidate rows ({p['minilm_pieces']} word pieces); "
                  f"{p['minilm_sample_rows']} of them, drawn at random, embedded in the same run took "
                  f"{p['minilm_sample_seconds']} s ({per_piece * 1000:.2f} ms per word piece): all of them "
                  f"{per_piece * p['minilm_pieces']:.0f} s, so the stage projects to about {projected:.0f} s "
                  "(target: 180 s)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--typos" in sys.argv:  # the near stage before / after character shingles for short prompts, 100k rows
        typos_main()
    elif "--typos-markdown" in sys.argv:  # re-render dedup_speed_typos.md from its JSON
        (OUT / "dedup_speed_typos.md").write_text(typos_markdown(json.loads((OUT / "dedup_speed_typos.json").read_text())))
    elif "--markdown-only" in sys.argv:  # re-render the .md from the last JSON (no measurement)
        (OUT / "dedup_speed.md").write_text(markdown(json.loads((OUT / "dedup_speed.json").read_text())))
    elif len(sys.argv) >= 4 and sys.argv[1] == "--measure":
        print(json.dumps(measure(sys.argv[2], int(sys.argv[3]))))
    else:
        rows = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--semantic-rows=")), 100_000)
        main(quick="--quick" in sys.argv, semantic_rows=rows, cheap_only="--cheap-only" in sys.argv)
