"""What does Sluice's infer stage cost on top of vLLM itself?

Same engine, same prompts, same sampling settings, same process, alternating order:
    raw       LLM.chat(messages, [SamplingParams(max_tokens, temperature=0)])
    pipeline  sluice.stages.infer.answer.infer_tier_shards, as the flow runs it: read the tier partition (Parquet), build
              requests, template and tokenize them, run the backend (one LLM.generate call per shard), price
              every row, write each shard's answers and billing (Parquet + JSON)
The engine is started once, before timing (its start is billed to rows, but is not overhead of the stage).

    .venv/bin/python bench/infer_overhead.py                     # tiny random Llama (fast)
    .venv/bin/python bench/infer_overhead.py --model smollm2     # the packaged SmolLM2-135M-Instruct

Writes bench/results/infer_overhead_<model>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402


def prompts(n: int) -> list[str]:
    sample = pq.read_table(ROOT / "data" / "samples" / "prompts.parquet")["prompt"].to_pylist()
    return [f"{sample[i % len(sample)]} (variant {i})" for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from vllm import SamplingParams

    from models.backends import Request
    from models.backends.vllm_offline import VLLMBackend, acquire_engine, shutdown_engine
    from models.catalogue import Catalogue
    from models.packaged import PACKAGED_PREFIX
    from models.tiny import build_tiny_llama
    from sluice.config import Settings
    from sluice.stages.infer.answer import infer_tier_shards
    from sluice.stages.ingest.read import validate_prompts

    work = ROOT / "bench" / ".work"
    model = (str(build_tiny_llama(work / "tiny-llama")) if args.model == "tiny"
             else PACKAGED_PREFIX + "smollm2-135m-instruct")
    catalogue = Catalogue.model_validate({
        "baseline": "premium",
        "workers": {"cpu": {"usd_per_hour": 0.0893}},
        "tiers": [
            {"name": "small", "backend": "vllm", "model": model, "dtype": "float32", "worker": "cpu",
             "max_model_len": 1024},
            {"name": "premium", "backend": "openai", "model": "x", "base_url": "http://127.0.0.1:9/v1",
             "input_usd_per_1m": 2.5, "output_usd_per_1m": 10.0},
        ],
    })
    tier = catalogue.tier("small")
    texts = prompts(args.rows)
    partition = validate_prompts(pa.table({"prompt": texts, "max_tokens": pa.array([args.max_tokens] * args.rows,
                                                                                   pa.int32())}))
    part_path = work / "infer_overhead_partition.parquet"
    part_path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(partition, part_path)

    t0 = time.perf_counter()
    llm, _ = acquire_engine(tier, str(ROOT / "data"))
    engine_start = time.perf_counter() - t0
    messages = [Request(str(i), t, None, args.max_tokens).messages() for i, t in enumerate(texts)]

    def raw() -> tuple[float, int]:
        params = [SamplingParams(max_tokens=args.max_tokens, temperature=0.0) for _ in texts]
        t = time.perf_counter()
        outs = llm.chat(messages, sampling_params=params, use_tqdm=False)
        return time.perf_counter() - t, sum(len(o.outputs[0].token_ids) for o in outs)

    def pipeline() -> tuple[float, int]:
        answers = work / "infer_overhead_answers"
        shutil.rmtree(answers, ignore_errors=True)  # a fresh run folder: no shard is skipped as already answered
        t = time.perf_counter()
        infer_tier_shards(part_path, answers, tier, catalogue, VLLMBackend(tier, str(ROOT / "data")),
                          args.max_tokens, shard_rows=Settings().shard_rows)
        wall = time.perf_counter() - t
        return wall, sum(sum(pq.read_table(p)["output_tokens"].to_pylist()) for p in answers.glob("*/*.parquet"))

    raw()  # warm-up: first batch pays one-off allocations
    raw_runs, pipe_runs = [], []
    for i in range(args.repeats):
        order = (raw, pipeline) if i % 2 == 0 else (pipeline, raw)
        for fn in order:
            (raw_runs if fn is raw else pipe_runs).append(fn())
    shutdown_engine()

    raw_s = statistics.median(w for w, _ in raw_runs)
    pipe_s = statistics.median(w for w, _ in pipe_runs)
    tokens = raw_runs[0][1]
    result = {
        "model": args.model,
        "rows": args.rows,
        "max_tokens": args.max_tokens,
        "repeats": args.repeats,
        "engine_start_s": round(engine_start, 2),
        "raw_wall_s": [round(w, 3) for w, _ in raw_runs],
        "pipeline_wall_s": [round(w, 3) for w, _ in pipe_runs],
        "raw_median_s": round(raw_s, 3),
        "pipeline_median_s": round(pipe_s, 3),
        "ratio_pipeline_over_raw": round(pipe_s / raw_s, 4),
        "output_tokens": tokens,
        "same_output_tokens": all(n == tokens for _, n in raw_runs + pipe_runs),
        "raw_out_tok_per_s": round(tokens / raw_s, 1),
        "pipeline_out_tok_per_s": round(tokens / pipe_s, 1),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, vllm-cpu",
        "target": "ratio <= 1.05",
    }
    out = ROOT / "bench" / "results" / f"infer_overhead_{args.model}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# infer overhead ({args.model}, {args.rows} rows x {args.max_tokens} tokens, median of {args.repeats})",
          "", "| | wall s | out tok/s |", "|---|---|---|",
          f"| raw LLM.chat | {raw_s:.3f} | {tokens / raw_s:.1f} |",
          f"| Sluice infer stage | {pipe_s:.3f} | {tokens / pipe_s:.1f} |", "",
          f"ratio pipeline / raw = **{pipe_s / raw_s:.3f}** (target <= 1.05); engine start {engine_start:.1f} s "
          "(billed to rows, excluded from both)."]
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
