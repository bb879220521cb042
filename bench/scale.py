"""Scale (issue 19): rows against wall time, time per row and peak RSS, per stage, at 100k and 1M rows.

Each measurement runs the stage's own command (`sluice route ...`) as a child process and polls the child's RSS
(psutil, every 20 ms; the peak is the highest sample, so a spike shorter than that can be missed: the child's own
ru_maxrss from `wait4` is recorded beside it and is the figure the target is judged by). The input files are
generated deterministically under /tmp (never committed) from ../shared/data prompt sets:

    ShareGPT first user turns (dev, 8.7k: long chat requests), GSM8K questions (train + test, 8.8k: arithmetic),
    self-instruct instructions with their first input (seed + user-oriented, 0.5k), MT-bench first turns (80).

Each row is a real prompt, or (past the first pass through them) a real prompt with one random edit (case, a
typo, a dropped word, an added number, "Please ...", "... Thanks.", or a demand for rigour: "Explain step by
step."), so routing sees the real mix of intents and lengths. A third of the rows carry a `max_tokens` (64-1024),
so budget routing prices rows differently.

Stages:
    route       `sluice route` with the heuristic gatekeeper (thresholds), and with a learned router trained
                without embeddings (`sluice router train --no-embeddings` on RouteLLM's GSM8K labels) under
                thresholds and under `--premium-share 0.2` (the two-pass path)
    dedup       `sluice dedup` with its default stages (exact, near, semantic) and with exact + near alone
                (`--stage dedup`)

    .venv/bin/python bench/scale.py                       # route at 100k and 1M; writes bench/results/scale.{json,md}
    .venv/bin/python bench/scale.py --rows 100000         # one size only (merged into the JSON)
    .venv/bin/python bench/scale.py --label before        # the label the figures are kept under (before/after)
    .venv/bin/python bench/scale.py --stage dedup --case exact+near --rows 1000000   # dedup, one case
    .venv/bin/python bench/scale.py --markdown-only       # re-render the .md from the JSON

Timings are wall-clock on a shared 2-core machine (the load average at the start and end of each run is
recorded): read them as orders of magnitude, never assert them in tests.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results"
TMP = Path("/tmp/sluice-scale")
SLUICE = ROOT / ".venv" / "bin" / "sluice"
TARGET_RSS_MB = 2048.0
TARGET_GROWTH = 1.5
KEEP_OUTPUT = False  # --keep-output: the dedup output files are kept under TMP, named after the code that wrote them


# ---- the input files ----------------------------------------------------------------------------------------

def real_prompts() -> list[str]:
    out: list[str] = []
    with gzip.open(SHARED / "prompts" / "sharegpt_first_turns_dev.jsonl.gz", "rt") as f:
        out += [json.loads(line)["prompt"] for line in f]
    for split in ("train", "test"):
        with open(SHARED / "prompts" / "gsm8k" / f"{split}.jsonl") as f:
            out += [json.loads(line)["question"] for line in f]
    for name in ("seed_tasks", "user_oriented_instructions"):
        with open(SHARED / "prompts" / "self_instruct" / f"{name}.jsonl") as f:
            for line in f:
                task = json.loads(line)
                first = (task.get("instances") or [{}])[0].get("input") or ""
                out.append(task["instruction"] + ("\n\n" + first if first else ""))
    with open(SHARED / "prompts" / "mt_bench" / "question.jsonl") as f:
        out += [json.loads(line)["turns"][0] for line in f]
    return [p for p in out if p and p.strip()]


def _vary(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    kind = rng.randrange(7)
    if kind == 0:
        return text.upper() if rng.random() < 0.2 else text.lower() + " "
    if kind == 1 and len(words) > 3:
        i = rng.randrange(len(words))
        w = words[i]
        if len(w) > 3:
            j = rng.randrange(len(w) - 1)
            words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2:]
        return " ".join(words)
    if kind == 2 and len(words) > 4:
        del words[rng.randrange(len(words))]
        return " ".join(words)
    if kind == 3:
        return text + " " + str(rng.randrange(1, 1000))
    if kind == 4:
        return "Please " + text
    if kind == 5:
        return text + " Explain step by step."
    return text + " Thanks."


def prompt_file(n: int, seed: int = 0, row_group: int = 65536) -> Path:
    """`id`, `prompt`, `max_tokens` (null for two rows in three): n rows, written once under /tmp."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = TMP / f"prompts_{n}_s{seed}.parquet"
    if path.exists():
        return path
    base = real_prompts()
    rng = random.Random(seed)
    prompts = base[:n]
    while len(prompts) < n:
        prompts.append(_vary(base[rng.randrange(len(base))], rng))
    rng.shuffle(prompts)
    max_tokens = [rng.choice((64, 128, 256, 512, 1024)) if rng.random() < 1 / 3 else None for _ in range(n)]
    table = pa.table({"id": [f"p{i}" for i in range(n)], "prompt": prompts,
                      "max_tokens": pa.array(max_tokens, pa.int64())})
    TMP.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path) + ".tmp", row_group_size=row_group)
    os.replace(str(path) + ".tmp", path)
    return path


def router_dir() -> Path:
    """A logistic router without embeddings, trained on RouteLLM's GSM8K labels (Mixtral = cheap, GPT-4 = premium)."""
    path = TMP / "router_noemb"
    if (path / "router.json").exists():
        return path
    import polars as pl

    with open(SHARED / "routing" / "gsm8k_responses.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = pl.DataFrame({
        "prompt": [r["prompt"] for r in rows],
        "cheap_ok": [r["mistralai/Mixtral-8x7B-Instruct-v0.1"] == "True" for r in rows],
        "premium_ok": [r["gpt-4-1106-preview"] == "True" for r in rows],
    })
    TMP.mkdir(parents=True, exist_ok=True)
    labels.write_parquet(TMP / "router_labels.parquet")
    subprocess.run([str(SLUICE), "router", "train", str(TMP / "router_labels.parquet"), "-o", str(path),
                    "--no-embeddings"], check=True, capture_output=True)
    return path


# ---- measuring a child process ------------------------------------------------------------------------------

def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_child(cmd: list[str], env: dict | None = None) -> dict:
    """Wall time and peak RSS of `cmd`: psutil samples every 20 ms, and the child's own ru_maxrss (wait4)."""
    import psutil

    log = TMP / f"child_{os.getpid()}.log"
    start = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    ps = psutil.Process(proc.pid)
    sampled = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            sampled = max(sampled, ps.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace").strip().splitlines()[-2:]
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "sampled_peak_rss_mb": round(sampled / 2**20, 1), "output_tail": tail}


# ---- stages -------------------------------------------------------------------------------------------------

ROUTE_CASES = {
    "heuristic": lambda r: [],
    "router": lambda r: ["--router", str(r)],
    "router-share-0.2": lambda r: ["--router", str(r), "--premium-share", "0.2"],
    # run on its own: --case budget
    "budget": lambda r: ["--budget-usd", "50"],
}
DEFAULT_CASES = ["heuristic", "router", "router-share-0.2"]


def bench_route(n: int, cases: list[str], src_tree: Path | None = None) -> list[dict]:
    src = prompt_file(n)
    rdir = router_dir()
    results = []
    for case in cases:
        dst = TMP / f"routed_{case}_{n}.parquet"
        before = load()
        env = dict(os.environ, PYTHONPATH=str(src_tree)) if src_tree else None  # another checkout's code
        r = run_child([str(SLUICE), "route", str(src), "-o", str(dst), *ROUTE_CASES[case](rdir)], env)
        r.update(stage="route", case=case, rows=n, load_before=before, load_after=load(),
                 us_per_row=round(r["wall_s"] / n * 1e6, 2))
        print(json.dumps(r), flush=True)
        results.append(r)
        dst.unlink(missing_ok=True)
    return results


DEDUP_CASES = {
    "default": ["--only", "exact,near,semantic"],  # the CLI's default stages (semantic with the MiniLM package)
    "exact+near": ["--only", "exact,near"],
}


def with_data(src_tree: Path) -> list[str]:
    """Copy the files of data/samples the code reads (the dedup calibration set, ...) into another checkout that
    lacks them (an older commit's `git archive`): without them its `sluice dedup` exits 1. Returns what it copied."""
    import shutil

    copied = []
    for f in sorted((ROOT / "data" / "samples").rglob("*")):
        dst = src_tree / f.relative_to(ROOT)
        if f.is_file() and not dst.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dst)
            copied.append(str(f.relative_to(ROOT)))
    return copied


def bench_dedup(n: int, cases: list[str], src_tree: Path | None = None) -> list[dict]:
    """`sluice dedup IN -o OUT` per case, in a child process, like route."""
    src = prompt_file(n)
    if src_tree and (copied := with_data(src_tree)):
        print(f"copied into {src_tree}: {', '.join(copied)}", flush=True)
    results = []
    for case in cases:
        dst = TMP / f"dedup_{case}_{n}.parquet"
        before = load()
        env = dict(os.environ, PYTHONPATH=str(src_tree)) if src_tree else None
        r = run_child([str(SLUICE), "dedup", str(src), "-o", str(dst), *DEDUP_CASES[case]], env)
        r.update(stage="dedup", case=case, rows=n, load_before=before, load_after=load(),
                 us_per_row=round(r["wall_s"] / n * 1e6, 2))
        print(json.dumps(r), flush=True)
        results.append(r)
        if KEEP_OUTPUT:  # compared against another version's (--keep-output)
            dst.rename(dst.with_name(f"{dst.stem}_{'src' if src_tree else 'here'}.parquet"))
        dst.unlink(missing_ok=True)
    return results


# the other stages join here (a function per stage returning the same records)
STAGES = {"route": bench_route, "dedup": bench_dedup}


# ---- the report ---------------------------------------------------------------------------------------------

def render(data: dict) -> str:
    lines = ["# Scale: rows against wall time and peak RSS (bench/scale.py)", "",
             "Machine: 2 CPU cores shared with several other agents' jobs (tests, benches, builds) running at the same "
             "time; the 1-minute load average before and after each run is in the table. Wall times are noisy "
             "(read them as orders of magnitude); peak RSS is the child process's own `ru_maxrss`.", "",
             f"Targets (issue 19): peak RSS <= {TARGET_RSS_MB:.0f} MB at 1M rows, and time per row at 1M <= "
             f"{TARGET_GROWTH}x that at 100k.", ""]
    for stage, notes in data.get("notes", {}).items():
        lines += [f"## {stage}", "", *notes, ""]
        lines += ["| version | case | rows | wall s | us/row | peak RSS MB | sampled peak MB | load before -> after | "
                  "growth 100k->1M | meets |", "|---|---|---|---|---|---|---|---|---|---|"]
        recs = [r for r in data["runs"] if r["stage"] == stage]
        for r in sorted(recs, key=lambda r: (r["label"] != "before", r["case"], r["rows"])):
            small = next((s for s in recs if s["label"] == r["label"] and s["case"] == r["case"]
                          and s["rows"] == 100_000 and s["rc"] == 0), None)
            growth = (r["us_per_row"] / small["us_per_row"]) if small and r["rows"] == 1_000_000 and r["rc"] == 0 else None
            meets = ""
            if r["rows"] == 1_000_000:
                ok = r["rc"] == 0 and r["peak_rss_mb"] <= TARGET_RSS_MB and growth is not None and growth <= TARGET_GROWTH
                meets = "yes" if ok else "no"
            wall = f"{r['wall_s']}" if r["rc"] == 0 else f"failed (rc {r['rc']})"
            lines.append(f"| {r['label']} | {r['case']} | {r['rows']:,} | {wall} | {r['us_per_row']} | "
                         f"{r['peak_rss_mb']} | {r['sampled_peak_rss_mb']} | {r['load_before'][0]} -> "
                         f"{r['load_after'][0]} | {'' if growth is None else f'{growth:.2f}x'} | {meets} |")
        lines.append("")
    return "\n".join(lines) + "\n"


ROUTE_NOTES = [
    "`sluice route IN -o OUT` on the generated files (1M rows: 520 characters a row on average, 302 MB of "
    "Parquet in 64k-row row groups): the heuristic gatekeeper under its thresholds; a logistic router trained "
    "without embeddings on RouteLLM's GSM8K labels (`--router`), under thresholds and under `--premium-share 0.2`.",
    "",
    "- **before**: the whole file read into memory, routed as one table (`route_batch`), written at once. On the "
    "commit before this change; the heuristic gatekeeper and the router both crashed on a plain prompt file "
    "before that (no `status` column; non-ASCII digits in ShareGPT prompts), fixed first.",
    "- **after**: `sluice.stages.route.stream.route_file`: 64k-row record batches in, written as they are routed; "
    "the share reads the file twice (scores kept, the scorer's reasons spilled to disk, the quantile taken over "
    "all scores, then tiers attached). Same output as before (tests/sluice/stages/route/test_stream.py).",
    "- **budget** (`--budget-usd 50`, run on its own: `--case budget`): streams the same way; the plan "
    "(`policies.route_by_budget`) is made over all rows at once between the passes. **before**: each row's convex "
    "hull a Python list and each upgrade step a tuple, sorted and bought one at a time (about 7.5 s and 600 MB for "
    "the plan alone at 1M rows, measured in process on random costs). **after**: the same greedy on arrays (hulls "
    "built a column of tiers at a time over all rows, steps ordered by one lexsort, bought in rounds of cumulative "
    "sums; 0.9 s and 200 MB at 1M). Same plan: identical routed files at 1M ($50) and 100k ($5, $300), and "
    "tests/sluice/stages/route/test_budget_equivalence.py checks it against the old code on random rows. Both "
    "met the targets already; after, 1.16 -> 0.93 GB at 1M, and 26.8 -> 21.2 us/row (load 0.9-2.2 in both).",
    "- The after runs at 100k with the router overlapped this change's own test runs on the same two cores "
    "(14.5 s and 21.2 s against 8.0 s and 7.6 s before); at 1M the router streams at 75 us/row against 52 before: "
    "per-batch overhead and load are not separated here. Peak RSS is the figure that is not noise: 1.95-2.36 GB "
    "-> 0.78-0.81 GB at 1M.",
]


DEDUP_NOTES = [
    "`sluice dedup IN -o OUT` on the same generated files, as a child process: `default` is the CLI's default stages "
    "(exact, near, semantic with the shipped MiniLM package and the calibrated rule), `exact+near` is `--only "
    "exact,near`.",
    "",
    "- **before**: commit 75e8188 (`git archive` run with `--src`): the whole input read twice (raw file + "
    "ingested rows), every prompt a Python string (`texts = ...to_list()`), the near stage's shingles and full "
    "signature matrix for all rows at once, a MiniLM matrix of n x 384 floats, guard facts kept for every candidate "
    "row.",
    "- **95695aa** (the first bounded-memory dedup): near stage in 64k-row partitions through a `mapper` "
    "(signatures spilled to .npy, only LSH band keys kept), guard facts for the 32k most recently used rows, "
    "semantic vectors for short / candidate rows only, the CLI copying the input's columns over in 64k-row batches. "
    "Exact+near at 1M in process: 4010 MB, of which ingest alone 3198 MB peak. Its one CLI record (default, 100k) "
    "is kept in the table under its commit.",
    "- **after** (commit 8b1f21d): ingest batch-wise and vectorised (`sluice/stages/ingest/batch.py`: 64k rows at "
    "a time as Arrow compute, valid text carried without a copy, Python only for rows a mask cannot clear and for "
    "failing rows; the Parquet read without `pre_buffer`, which kept 288 MB of compressed chunks cached); "
    "`deduplicate(columns=...)` so `sluice dedup` never converts the prompts back to Arrow (600 MB at 1M); the "
    "near stage's verification reads candidate texts through a zero-copy string_view array instead of gathering "
    "and converting them (two copies, about 500 MB at 1M). `read_prompts` at 1M rows in process: peak 3205 -> "
    "1109 MB, 26.9 -> 11.9 s (load 10-13), output `Table.equals` the row-by-row code's; "
    "tests/sluice/stages/ingest/test_validate_equivalence.py holds the old code's output on every bad-row kind. "
    "Output identical: exact+near at 100k equals commit 9e1c618's (`git archive`, polars `equals`), at 1M equals "
    "the output of this change's ingest with 9e1c618's dedup code (a full 9e1c618 run at 1M was not repeated; "
    "95695aa's was checked equal to before's).",
    "- Machine load: the after runs of the default case and this profile shared the 2 cores with other agents' "
    "benches and tests and with this change's own profiling (1-minute load 5-13); their wall times say nothing "
    "about speed. The exact+near rows in the table were rerun at the end on a quiet machine (load 0-1.2).",
    "",
    "**Both cases meet the targets at 32d438c** (the last rows of the table; load 1.5-1.9, this session's own "
    "runs only): default (exact, near, semantic) at 1M rows peaks at **1848 MB** in 985 s, 985 us/row against "
    "1175 at 100k (**0.84x**); exact+near at 1M peaks at **1662 MB** in 115 s, 115 us/row against 92 at 100k "
    "(**1.26x**). Same marks: polars `equals` against e42b951's output at 100k, and at 1M against 3cf857f's "
    "(whose counts equal e42b951's: exact 469,329, near 162,003, semantic 41,134; e42b951's own 1M file was "
    "overwritten by a profile before a byte comparison).",
    "",
    "How the default case got there (each step checked for the same output at 100k; peaks of the CLI child "
    "unless marked in process):",
    "",
    "| commit | change | 100k peak MB | 1M peak MB |", "|---|---|---|---|",
    "| 8b1f21d (after) | batch-wise ingest, `columns=`, string_view verification (above) | 2669 | 5.4 GB "
    "projected |",
    "| 19ce025 | MiniLM tokenises in chunks into flat arrays (no Python lists per text) | | |",
    "| e42b951 | large frees unmapped (glibc `M_MMAP_THRESHOLD` 1 MB), MiniLM batches bounded by 4096 padded word "
    "pieces, the static table's projection cached (its SVD peaked ~400 MB) | 1432 | 3623 (1122 s) |",
    "| a12445c, 3cf857f | allocator defaults (polars' jemalloc returns freed pages at once, pyarrow on the system "
    "malloc: 1050 -> 727 MB after ingesting 1M rows); the semantic stage keeps guard facts for its 65k most "
    "recently used rows (dicts over every candidate row held ~600 MB at 1M) and scores candidate pairs 16k at a "
    "time (the einsum over two 752k x 384 matrices made the 3.6 GB peak); near drops its band keys before "
    "verification | 1310 | 2501 in process |",
    "| 1c47310 | `sluice dedup` hands the stage a reader, so the stage holds the only copy of the prompts and, "
    "once near is done, keeps just the short ones the semantic stage compares (the prompt column is 502 MB at "
    "1M); the guards' token caches emptied (175 MB) and glibc's free heap pages returned (90 MB) after each "
    "stage | 1266 | 1979 in process |",
    "| 32d438c | the veto pass's guard facts and token caches dropped before the MiniLM pass | 1126 | **1848** |",
    "",
    "In process at 1M (1c47310, RSS sampled every 50 ms): ingest 733 MB; exact ~1100; near peaks at 1620 and "
    "ends at 1405; the long prompts dropped and torch, transformers, MiniLM and the static table loaded (about "
    "450 MB of fixed cost); static neighbours and guards on 751,957 candidate pairs (611,969 vetoed) 1642; MiniLM "
    "over the 114,922 candidate rows 1890-1940 for 13 minutes; resolution 1942; output 1286. 32d438c took the "
    "MiniLM plateau down by the veto pass's facts.",
    "",
    "Margins and limits: 200 MB under 2 GiB at 1M on this generator. The MiniLM pass holds vectors for candidate "
    "rows only (1.5 kB a row): a batch with more short near-paraphrases than this one (115k candidate rows per 1M) "
    "costs about 150 MB more per 100k candidate rows. The default case's wall time is mostly MiniLM on 2 cores "
    "(about 13 of 16 minutes at 1M).",
    "",
    "Before this round, for the record: at 100k the CLI peaked at 2669 MB (8b1f21d, 844 s under load 9; 95695aa: "
    "2472 MB; before, without the learned pair scorer of issue 21: 2412 MB), where the semantic stage cost about "
    "1.9 GB (0.6-0.7 GB fixed for torch and MiniLM, the rest in the MiniLM pass's tokenisation and 128-text "
    "batches); at 300k 3288 MB (1255 s). The exact+near case was at the line at 8b1f21d (2037-2056 MB in three "
    "runs at 1M; 2043 MB in the table, 103.6 s, 1.15x).",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, action="append")
    ap.add_argument("--stage", choices=list(STAGES), default="route")
    ap.add_argument("--case", action="append", choices=[*ROUTE_CASES, *DEDUP_CASES])
    ap.add_argument("--label", default="after")
    ap.add_argument("--src", type=Path, help="run this checkout's code (e.g. `git archive` of an older commit)")
    ap.add_argument("--markdown-only", action="store_true")
    ap.add_argument("--keep-output", action="store_true", help="keep the dedup output files (to compare versions)")
    args = ap.parse_args()
    global KEEP_OUTPUT
    KEEP_OUTPUT = args.keep_output
    path = OUT / "scale.json"
    data = json.loads(path.read_text()) if path.exists() else {"runs": [], "notes": {}}
    if not args.markdown_only:
        for n in args.rows or [100_000, 1_000_000]:
            cases = args.case or (DEFAULT_CASES if args.stage == "route" else list(DEDUP_CASES))
            for rec in STAGES[args.stage](n, cases, args.src):
                rec["label"] = args.label
                data["runs"] = [r for r in data["runs"] if (r["label"], r["stage"], r["case"], r["rows"]) !=
                                (rec["label"], rec["stage"], rec["case"], rec["rows"])] + [rec]
                path.write_text(json.dumps(data, indent=1) + "\n")
    data["notes"] = {"route": ROUTE_NOTES, "dedup": DEDUP_NOTES}
    data.pop("dedup_context", None)
    path.write_text(json.dumps(data, indent=1) + "\n")
    (OUT / "scale.md").write_text(render(data))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
