"""Quantisation on this CPU: SmolLM2-135M-Instruct in fp32 against its W8A8 int8 copy, on the same engine settings and
the same prompts; bf16 (unquantised) beside them, to tell the dtype's share of any change from the int8's.

Each model runs in its own process (one vLLM engine at a time), through Sluice's own backend (models/backends/
vllm_offline.py) with the default catalogue's `small` settings, only `model` and `dtype` changed:
    fp32   packaged:smollm2-135m-instruct, float32 (what the demo runs)
    bf16   packaged:smollm2-135m-instruct, bfloat16
    w8a8   packaged:smollm2-135m-instruct-w8a8, bfloat16 (models/quantise.py; on this AMX CPU vLLM's int8 kernel
           takes bf16 activations only, so fp32 cannot serve it here)
Measured per model: the weight files' size, the engine's peak memory (resident set summed over the engine's
processes, sampled every 0.2 s), output tokens/s on free-text prompts (greedy, max 128 tokens, one generate
call), and graded accuracy on two tasks SmolLM2 can sometimes do:
    qqp     Quora question pairs (QQP dev, labelled; ../shared/data/pairs), "same question? yes or no" under a
            yes/no choice list, as bench/cascade_signals.py; graded exact against the label
    arith   "What is a + b?" / "a - b" / "a x b" with small operands, seeded; graded `number`
Each accuracy has its 95% Wilson interval; the difference from fp32 is paired (the same prompts) with Newcombe's
interval (sluice/stats.py). Free-text answers identical to fp32's are counted too.

    python bench/quantisation.py [--rows 200] [--free 64]    # ~15 min on 2 cores
"""

from __future__ import annotations

import json
import os
import platform
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from sluice.stats import paired_difference_interval, wilson_interval  # noqa: E402

QQP = ROOT.parent / "shared" / "data" / "pairs" / "qqp_dev.tsv"
PROMPTS = ROOT / "data" / "samples" / "prompts.parquet"
OUT = ROOT / "bench" / "results"
WORK = ROOT / "bench" / ".work"
SEED = 20261204
YES_NO = json.dumps({"enum": ["yes", "no"]})  # a choice list (models/backends/base.py)
MODELS = {
    "fp32": ("packaged:smollm2-135m-instruct", "float32"),
    "bf16": ("packaged:smollm2-135m-instruct", "bfloat16"),
    "w8a8": ("packaged:smollm2-135m-instruct-w8a8", "bfloat16"),
}


def tasks(rows: int, free: int) -> dict[str, list[dict]]:
    """The prompts, the same for every model: {task: [{id, prompt, max_tokens, schema, reference, grader}]}."""
    import polars as pl

    pairs = pl.read_csv(QQP, separator="\t", has_header=False, quote_char=None,
                        new_columns=["id", "qid1", "qid2", "q1", "q2", "label"]).drop_nulls()
    pairs = pairs.sample(n=min(rows, pairs.height), seed=SEED, shuffle=True)
    qqp = [{"id": f"qqp{i}", "max_tokens": 4, "schema": YES_NO, "grader": "exact",
            "prompt": f"Question 1: {a}\nQuestion 2: {b}\nDo these two questions ask the same thing? Answer yes or no.",
            "reference": "yes" if int(y) == 1 else "no"}
           for i, (a, b, y) in enumerate(zip(pairs["q1"], pairs["q2"], pairs["label"]))]
    rng = random.Random(SEED)
    arith = []
    for i in range(rows):
        op = rng.choice("+-x")
        a, b = (rng.randint(2, 12), rng.randint(2, 12)) if op == "x" else (rng.randint(1, 50), rng.randint(1, 50))
        value = a + b if op == "+" else a - b if op == "-" else a * b
        arith.append({"id": f"ar{i}", "max_tokens": 16, "schema": None, "grader": "number", "reference": str(value),
                      "prompt": f"What is {a} {'*' if op == 'x' else op} {b}? Reply with the number only."})
    texts = pl.read_parquet(PROMPTS)["prompt"].unique(maintain_order=True).to_list()[:free]
    freeform = [{"id": f"free{i}", "prompt": p, "max_tokens": 128, "schema": None, "grader": None, "reference": None}
                for i, p in enumerate(texts)]
    return {"qqp": qqp, "arith": arith, "free": freeform}


def run_one(name: str, rows: int, free: int, out: Path) -> None:
    """In the child process: one engine, every task, answers and timings to `out`."""
    from models.backends import Request, make_backend, release_engines
    from models.catalogue import load_catalogue

    model, dtype = MODELS[name]
    tier = load_catalogue().tier("small").model_copy(update={"model": model, "dtype": dtype, "logprobs": False})
    backend = make_backend(tier, data_dir=str(ROOT / "data"))
    result: dict = {"model": model, "dtype": dtype, "tasks": {}}
    try:
        for task, items in tasks(rows, free).items():
            reqs = [Request(r["id"], r["prompt"], None, r["max_tokens"], response_schema=r["schema"]) for r in items]
            batch = backend.complete(reqs)
            result["engine_start_s"] = result.get("engine_start_s") or batch.details.get("engine_start_s", 0.0)
            comps = {c.row_id: c for c in batch.completions}
            result["tasks"][task] = {
                "generate_s": batch.details.get("generate_s"),
                "answers": {r["id"]: (comps[r["id"]].text if r["id"] in comps else None) for r in items},
                "output_tokens": sum(c.output_tokens for c in batch.completions),
                "failed": sum(not c.ok for c in batch.completions),
            }
    finally:
        backend.close()
        release_engines()
    out.write_text(json.dumps(result))


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(name: str, rows: int, free: int) -> dict:
    """Run one model in a child process, sampling its process tree's memory."""
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / f"quantisation-{name}.json"
    out.unlink(missing_ok=True)
    child = subprocess.Popen([sys.executable, __file__, "--one", name, "--rows", str(rows), "--free", str(free)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(WORK / f"quantisation-{name}.log", "w"))
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(child.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    code = child.wait()
    done.set()
    sampler.join()
    if code != 0:
        raise RuntimeError(f"{name} failed (exit {code}); see {WORK / f'quantisation-{name}.log'}")
    result = json.loads(out.read_text())
    result.update(peak_rss_bytes=peak, wall_s=round(time.perf_counter() - t0, 1))
    return result


def summarise(measured: dict[str, dict], rows: int, free: int) -> dict:
    from models.packaged import resolve_model
    from models.quantise import weights_bytes
    from sluice.contracts.grading import grade

    items = tasks(rows, free)
    base = measured["fp32"]
    summary: dict = {}
    for name, m in measured.items():
        s: dict = {"model": m["model"], "dtype": m["dtype"],
                   "weights_mb": round(weights_bytes(resolve_model(m["model"], ROOT / "data")) / 1e6, 1),
                   "peak_rss_gb": round(m["peak_rss_bytes"] / 1e9, 2), "engine_start_s": round(m["engine_start_s"], 1)}
        f = m["tasks"]["free"]
        s["free"] = {"output_tokens": f["output_tokens"], "generate_s": round(f["generate_s"], 1),
                     "output_tokens_per_s": round(f["output_tokens"] / f["generate_s"], 1),
                     "identical_to_fp32": sum(f["answers"][k] == base["tasks"]["free"]["answers"][k]
                                              for k in f["answers"])}
        failed = {task: m["tasks"][task].get("failed", 0) for task in ("qqp", "arith", "free")}
        if any(failed.values()):
            raise RuntimeError(f"{name}: failed requests {failed}: see bench/.work/quantisation-{name}.log")
        for task in ("qqp", "arith"):
            ok = [bool(grade(m["tasks"][task]["answers"][r["id"]], r["reference"], r["grader"])[0]) for r in items[task]]
            ref = [bool(grade(base["tasks"][task]["answers"][r["id"]], r["reference"], r["grader"])[0])
                   for r in items[task]]
            low, high = wilson_interval(sum(ok), len(ok))
            diff, dlow, dhigh = paired_difference_interval(
                sum(a and not b for a, b in zip(ok, ref)), sum(b and not a for a, b in zip(ok, ref)),
                sum(a and b for a, b in zip(ok, ref)), sum(not a and not b for a, b in zip(ok, ref)))
            same = sum(m["tasks"][task]["answers"][r["id"]] == base["tasks"][task]["answers"][r["id"]]
                       for r in items[task])
            s[task] = {"n": len(ok), "correct": sum(ok), "accuracy": round(sum(ok) / len(ok), 4),
                       "low": round(low, 4), "high": round(high, 4), "diff_vs_fp32": round(diff, 4),
                       "diff_low": round(dlow, 4), "diff_high": round(dhigh, 4), "same_answer_as_fp32": same}
        summary[name] = s
    return summary


def markdown(r: dict) -> str:
    s = r["models"]
    lines = [
        "# Quantisation on this CPU: SmolLM2-135M-Instruct, fp32 against W8A8 int8", "",
        f"`{r['command']}` at commit {r['commit']} ({r['machine']}). Sluice's vLLM backend (vllm-cpu 0.32), the "
        "default catalogue's `small` settings (max_model_len 2048, enforce_eager, seed 0), one engine at a time in "
        "its own process; only the model and dtype differ. W8A8 int8: weights int8 per output channel, activations "
        "int8 per token at run time, compressed-tensors format, built by `sluice prepare --quantised` "
        "(models/quantise.py; lm_head and embeddings left as they are). On this CPU (AMX) vLLM's int8 kernel takes "
        "bf16 activations only, so the quantised model is served in bf16; bf16 unquantised is shown to separate the "
        "dtype's effect from the int8's.", "",
        "| model | weights MB | peak memory GB | engine start s | output tok/s (free text) | "
        f"QQP yes/no accuracy (n={s['fp32']['qqp']['n']}) | vs fp32 (paired) | arithmetic accuracy "
        f"(n={s['fp32']['arith']['n']}) | vs fp32 (paired) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in s.items():
        cells = []
        for task in ("qqp", "arith"):
            t = m[task]
            cells.append(f"{t['accuracy']:.3f} [{t['low']:.3f}, {t['high']:.3f}]")
            cells.append("—" if name == "fp32" else f"{t['diff_vs_fp32']:+.3f} [{t['diff_low']:+.3f}, {t['diff_high']:+.3f}]")
        lines.append(f"| {name} ({m['dtype']}) | {m['weights_mb']} | {m['peak_rss_gb']} | {m['engine_start_s']} | "
                     f"{m['free']['output_tokens_per_s']} | " + " | ".join(cells) + " |")
    lines += ["", "Same answer as fp32 (identical text, greedy): " + "; ".join(
        f"{name}: QQP {m['qqp']['same_answer_as_fp32']}/{m['qqp']['n']}, arithmetic {m['arith']['same_answer_as_fp32']}"
        f"/{m['arith']['n']}, free text {m['free']['identical_to_fp32']}/{r['free']}" for name, m in s.items()) + ".",
        "", "Intervals are 95%: Wilson for an accuracy, Newcombe's paired interval for the difference from fp32 on "
        "the same prompts (sluice/stats.py). Peak memory is the resident set summed over the engine's processes "
        "(shared pages counted once per process), KV cache 1 GiB (VLLM_CPU_KVCACHE_SPACE). Output tokens/s: "
        f"{r['free']} free-text prompts of data/samples/prompts.parquet in one generate call, greedy, at most 128 "
        "tokens each.", ""]
    lines += r.get("notes", [])
    return "\n".join(lines) + "\n"


def main(rows: int, free: int) -> dict:
    measured = {name: measure(name, rows, free) for name in MODELS}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    return {"command": f"python bench/quantisation.py --rows {rows} --free {free}", "commit": commit,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "rows": rows, "free": free, "models": summarise(measured, rows, free)}


def _arg(flag: str, default: int) -> int:
    return int(sys.argv[sys.argv.index(flag) + 1]) if flag in sys.argv else default


if __name__ == "__main__":
    rows, free = _arg("--rows", 200), _arg("--free", 64)
    if "--one" in sys.argv:
        name = sys.argv[sys.argv.index("--one") + 1]
        run_one(name, rows, free, WORK / f"quantisation-{name}.json")
        sys.exit(0)
    OUT.mkdir(parents=True, exist_ok=True)
    if "--markdown-only" not in sys.argv:
        (OUT / "quantisation.json").write_text(json.dumps(main(rows, free), indent=2) + "\n")
    (OUT / "quantisation.md").write_text(markdown(json.loads((OUT / "quantisation.json").read_text())))
    print((OUT / "quantisation.md").read_text())
