"""Does ordering a shard for vLLM's prefix cache pay? Output tokens/s, arrival order against prefix order.

Same engine (SmolLM2-135M-Instruct, fp32, prefix caching on), same prompts, same greedy sampling, same process:
    arrival  the rows as they came: ShareGPT dev first turns, each under one of 4 shared system prompts (or none),
             mixed at random, max_tokens drawn from {16, 48, 96}
    prefix   `prefix_order` below: rows sharing a system prompt together (groups in order of first appearance),
             longest expected length bucket first within a group
Two workloads on the one engine: "short" system prompts (85-114 tokens: under one of the CPU backend's 128-token
KV blocks, so never shareable) and "long" ones (the same plus a ~250-token house style guide).
Orders alternate (arrival, prefix, prefix, arrival, ...); the prefix cache is reset before each generate, so each
starts cold. The engine start is not timed. The machine's 1-minute load average is recorded before and after.

    .venv/bin/python bench/prefix_order.py [--rows 96] [--repeats 2]

Writes bench/results/prefix_order.json and .md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.backends import Request  # noqa: E402

SHAREGPT = ROOT.parent / "shared" / "data" / "prompts" / "sharegpt_first_turns_dev.jsonl.gz"
MODEL = ROOT / "data" / "models" / "smollm2-135m-instruct"

SYSTEMS = [
    "You are the support assistant of Northwind Outfitters, an online shop for outdoor gear. Answer politely and "
    "briefly. Never promise refunds: say that the returns team decides within five working days. Orders ship from "
    "Rotterdam within two days; delivery takes three to seven days in the EU and up to fourteen elsewhere. Do not "
    "share a customer's personal data, and never ask for card numbers. If a question is not about an order, a product "
    "or our policies, answer it helpfully anyway but keep it short. Sign off with 'Northwind Support'.",
    "You are a senior software engineer reviewing questions from colleagues. Prefer clear, correct and maintainable "
    "answers over clever ones. When code is involved, point out bugs, edge cases and security issues first, then "
    "style. Use short paragraphs and bullet points, give code in fenced blocks, and say when you are unsure. Assume "
    "Python 3.11 and PostgreSQL unless told otherwise. Keep answers under two hundred words when you can.",
    "You are a careful summariser for a busy executive. For any request, first give a one-sentence answer, then at "
    "most three bullet points with the facts that matter, then one line with a recommended next step. Avoid jargon, "
    "hedging and filler. If the request is ambiguous, state your assumption in a few words. Write in British "
    "English. Never invent numbers, names or dates: say that you do not know instead.",
    "You are a friendly tutor for adult learners. Explain ideas step by step with a simple example, check the "
    "learner's understanding with one short question at the end, and encourage them. Use plain words a twelve-year-"
    "old would follow; define any technical term the first time you use it. If the learner asks you to write "
    "something for them, write it, then explain in two sentences why it is written that way.",
]


# A house style guide appended to each system prompt in the "long" workload: real system prompts run to hundreds
# of tokens, and vLLM's CPU backend shares prefix-cache blocks of 128 tokens only when full, so a system prompt
# under ~128 tokens (with the chat template's) can never be shared.
STYLE_GUIDE = (
    " House style, which applies to every answer: write in plain, direct sentences; put the answer first and the "
    "reasoning after it; prefer active verbs; avoid exclamation marks, emojis and rhetorical questions; spell out "
    "numbers from one to nine and use digits for 10 and above; write dates as 4 December 2026; use the metric system "
    "and give imperial units in brackets only when the reader asked for them; quote sources by name when you rely "
    "on them and never invent a citation; when a list has more than five items, group them under short headings; "
    "when you give instructions, number the steps and keep each step to one action; when you are not sure, say how "
    "sure you are and what would settle it; do not repeat the question back; do not apologise for being an AI; "
    "keep a neutral, respectful tone with everyone, including people who are rude; do not give medical, legal or "
    "financial advice beyond general information, and suggest a qualified professional when the stakes are high; "
    "refuse requests that would harm someone, briefly and without lecturing; and finish with nothing after the "
    "answer: no sign-off, no offer of further help, no summary of what you just said."
)


def workload(n: int, seed: int = 0, long_systems: bool = False):
    """n ShareGPT first turns (short enough to fit beside a system prompt and the answer in 2,048 tokens), in
    arrival order, each with a system prompt (one of SYSTEMS, or none for a fifth of them) and a max_tokens."""
    rng = random.Random(seed)
    systems = [s + STYLE_GUIDE for s in SYSTEMS] if long_systems else SYSTEMS
    rows = []
    with gzip.open(SHAREGPT, "rt") as f:
        for line in f:
            prompt = json.loads(line)["prompt"]
            if 20 <= len(prompt) <= 1200:
                rows.append(prompt)
            if len(rows) >= n:
                break
    return [Request(row_id=f"r{i}", prompt=p, max_tokens=rng.choice([16, 48, 96]),
                    system=None if rng.random() < 0.2 else rng.choice(systems)) for i, p in enumerate(rows)]


def length_bucket(req: Request) -> int:
    """The row's expected length in tokens (its prompt, at ~4 characters a token, plus its max_tokens), rounded
    up to a power of two: rows of one bucket start and finish close together."""
    expected = (len(req.prompt or "") + sum(len(content) for _, content in req.history)) // 4
    return max(1, expected + req.max_tokens - 1).bit_length()


def prefix_order(requests: Sequence[Request]) -> list[int]:
    """The order to hand rows to vLLM in: rows sharing a system prompt (the start of the chat-templated prompt,
    which vLLM's prefix cache can share) together, groups in order of first appearance; within a group, the
    longest expected bucket first (`length_bucket`), arrival order within a bucket. Returns indices."""
    first: dict[str | None, int] = {}
    for i, req in enumerate(requests):
        first.setdefault(req.system, i)
    return sorted(range(len(requests)),
                  key=lambda i: (first[requests[i].system], -length_bucket(requests[i]), i))


def measure(llm, requests, repeats: int) -> dict:
    """Arrival order against prefix order on one workload, alternating, each generate on a cold prefix cache."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tok = llm.get_tokenizer()

    def ids(req) -> list[int]:
        out = tok.apply_chat_template(req.messages(), add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    prompts = [TokensPrompt(prompt_token_ids=ids(r)) for r in requests]
    params = [SamplingParams(max_tokens=r.max_tokens, temperature=0.0) for r in requests]
    orders = {"arrival": list(range(len(requests))), "prefix": prefix_order(requests)}
    runs: dict[str, list[dict]] = {"arrival": [], "prefix": []}
    answers: dict[str, list[str]] = {}
    schedule = [name for k in range(repeats) for name in (("arrival", "prefix") if k % 2 == 0
                                                          else ("prefix", "arrival"))]
    for name in schedule:
        order = orders[name]
        llm.reset_prefix_cache()
        t = time.perf_counter()
        outs = llm.generate([prompts[i] for i in order], [params[i] for i in order], use_tqdm=False)
        wall = time.perf_counter() - t
        out_tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        by_row = [""] * len(requests)
        for i, o in zip(order, outs):
            by_row[i] = o.outputs[0].text
        answers.setdefault(name, by_row)
        runs[name].append({"wall_s": round(wall, 3), "output_tokens": out_tokens,
                           "input_tokens": sum(len(o.prompt_token_ids) for o in outs),
                           "cached_prompt_tokens": sum(getattr(o, "num_cached_tokens", 0) or 0 for o in outs),
                           "output_tokens_per_s": round(out_tokens / wall, 2), "load_1m": round(os.getloadavg()[0], 2)})
        print(name, runs[name][-1], flush=True)
    med = {n: statistics.median(r["output_tokens_per_s"] for r in runs[n]) for n in runs}
    systems = sorted({r.system for r in requests if r.system})
    return {"rows": len(requests), "system_prompt_tokens": [len(tok.encode(s)) for s in systems],
            "schedule": schedule, "runs": runs, "median_output_tokens_per_s": med,
            "ratio_prefix_over_arrival": round(med["prefix"] / med["arrival"], 3),
            "same_answer_rows": sum(a == b for a, b in zip(answers["arrival"], answers["prefix"]))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()

    from vllm import LLM

    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    llm = LLM(model=str(MODEL), dtype="float32", max_model_len=2048, enforce_eager=True, seed=0,
              enable_prefix_caching=True, disable_log_stats=False)  # as Sluice's engine: cached-token counts
    start_s = time.perf_counter() - t0
    block = llm.llm_engine.vllm_config.cache_config.block_size
    workloads = {name: measure(llm, workload(args.rows, long_systems=name == "long"), args.repeats)
                 for name in ("short", "long")}
    load_after = os.getloadavg()[0]
    ratios = [w["ratio_prefix_over_arrival"] for w in workloads.values()]
    result = {
        "bench": "prefix_order", "model": "SmolLM2-135M-Instruct fp32", "kv_block_tokens": block,
        "repeats": args.repeats, "engine_start_s": round(start_s, 1), "workloads": workloads,
        "load_1m_before": round(load_before, 2), "load_1m_after": round(load_after, 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)", "wins": min(ratios) > 1.02,
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "prefix_order.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# prefix-cache ordering ({args.rows} ShareGPT dev rows, {len(SYSTEMS)} shared system prompts mixed "
             f"in arrival order, SmolLM2-135M fp32, prefix caching on, KV blocks of {block} tokens)", ""]
    for name, w in workloads.items():
        med = w["median_output_tokens_per_s"]
        lines += [f"## {name} system prompts ({', '.join(map(str, w['system_prompt_tokens']))} tokens)", "",
                  "| order | run | wall s | output tokens | cached prompt tokens | out tok/s | load 1m |",
                  "|---|---|---|---|---|---|---|"]
        for order in ("arrival", "prefix"):
            for k, r in enumerate(w["runs"][order]):
                lines.append(f"| {order} | {k + 1} | {r['wall_s']} | {r['output_tokens']} | "
                             f"{r['cached_prompt_tokens']} | {r['output_tokens_per_s']} | {r['load_1m']} |")
        lines += ["", f"median output tokens/s: arrival {med['arrival']:.1f}, prefix {med['prefix']:.1f}; ratio "
                  f"prefix / arrival = **{w['ratio_prefix_over_arrival']:.3f}**; same answer on "
                  f"{w['same_answer_rows']} of {w['rows']} rows.", ""]
    lines += [f"Engine start {start_s:.0f} s (not timed). 1-minute load average {load_before:.2f} before, "
              f"{load_after:.2f} after, on {os.cpu_count()} cores shared with other work: the ratio, not the "
              "absolute speed, is the result.", "",
              ("Verdict: prefix order wins on both workloads (> 2%)." if result["wins"] else
               "Verdict: no win (kept only if both ratios exceed 1.02): prefix order is not wired into the backend. "
               "The cached prompt tokens are the same in both orders: one `generate` call holds the whole shard, "
               "and vLLM's scheduler already reuses each system prompt's full KV blocks whatever the order; "
               "system prompts under one block are never shared.")]
    (out / "prefix_order.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
