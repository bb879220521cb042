"""Write the quality demo: GSM8K questions with their reference answers, recorded answers of two real large
models for replay tiers, and a router + answer verifier trained on the other questions. Deterministic.

Sources (read by path from ../shared/data, see data/samples/GSM8K_PROVENANCE.md):
    prompts/gsm8k/test.jsonl                 GSM8K test split (MIT): question, worked answer ending "#### N"
    routing/gsm8k_responses.csv              RouteLLM's eval data (Apache-2.0): the same 1,319 questions answered
                                             by Mixtral-8x7B-Instruct and GPT-4-1106-preview, and whether right

Written here:
    gsm8k.parquet          DEMO_ROWS questions (id, prompt, reference = the number after ####) and DUPLICATES
                           exact repeats of some of them (a nightly batch repeats itself)
    gsm8k_mixtral.parquet  Mixtral-8x7B's recorded answers to those questions (prompt, response): the `mid` replay tier
    gsm8k_gpt4.parquet     GPT-4-1106's recorded answers (prompt, response): the `premium` replay tier
    gsm8k_router/          `sluice router train --no-embeddings` on the other questions (cheap_ok = Mixtral right,
                           premium_ok = GPT-4 right, both by the number grader against the references, as the run
                           grades; cheap_response = Mixtral's answer: also the answer verifier, with the questions)

    python data/samples/make_gsm8k.py
    sluice run data/samples/gsm8k.parquet --catalogue data/samples/gsm8k_tiers.toml --grader number \
        --router data/samples/gsm8k_router --premium-share 0.2 --mid-share 0.7 --cascade-share 0.5 \
        --cascade-min-confidence 1.0          (what `make demo` runs)
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from pathlib import Path

import polars as pl

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[2] / "shared" / "data"
TEST = SHARED / "prompts" / "gsm8k" / "test.jsonl"
RECORDED = SHARED / "routing" / "gsm8k_responses.csv"
CHEAP, PREMIUM = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
SEED = 20261204
DEMO_ROWS = 60
DUPLICATES = 6


def main() -> None:
    test = [json.loads(line) for line in TEST.read_text().splitlines() if line.strip()]
    reference = {t["question"]: re.sub(r"[,$]", "", t["answer"].split("####")[-1]).strip() for t in test}
    rec = pl.read_csv(RECORDED)
    missing = [p for p in rec["prompt"].to_list() if p not in reference]
    if missing:
        raise SystemExit(f"{len(missing)} recorded prompts are not GSM8K test questions (first: {missing[0][:80]!r})")
    order = list(range(rec.height))
    random.Random(SEED).shuffle(order)
    demo, train = sorted(order[:DEMO_ROWS]), sorted(order[DEMO_ROWS:])
    d = rec[demo]
    prompts = d["prompt"].to_list()
    repeats = random.Random(SEED + 1).sample(range(DEMO_ROWS), DUPLICATES)
    rows = pl.DataFrame({
        "id": [f"gsm8k-{i}" for i in demo] + [f"gsm8k-{demo[j]}-again" for j in repeats],
        "prompt": prompts + [prompts[j] for j in repeats],
        "reference": [reference[p] for p in prompts] + [reference[prompts[j]] for j in repeats],
    })
    rows.write_parquet(HERE / "gsm8k.parquet")
    for name, column in (("gsm8k_mixtral.parquet", CHEAP), ("gsm8k_gpt4.parquet", PREMIUM)):
        d.select("prompt", pl.col(f"{column}_response").str.strip_chars().alias("response")).write_parquet(HERE / name)
    t = rec[train]
    sys.path.insert(0, str(HERE.parents[1]))
    from sluice.contracts.grading import grade

    def right(column: str) -> list[bool]:
        return [grade(a, reference[p], "number")[0] is True
                for p, a in zip(t["prompt"].to_list(), t[f"{column}_response"].to_list())]

    labels = t.select("prompt", pl.col(f"{CHEAP}_response").str.strip_chars().alias("cheap_response")).with_columns(
        pl.Series("cheap_ok", right(CHEAP)), pl.Series("premium_ok", right(PREMIUM)))
    work = HERE / ".gsm8k_labels.parquet"
    labels.write_parquet(work)
    try:
        # from this folder, so that the saved router names its labels without a machine's path
        subprocess.run([sys.executable, "-m", "sluice.cli", "router", "train", work.name, "-o", "gsm8k_router",
                        "--no-embeddings", "--l2-text", "10"], check=True, cwd=HERE)
    finally:
        work.unlink(missing_ok=True)
    print(f"{rows.height} rows ({DUPLICATES} repeats), recorded answers for {d.height} questions, router and "
          f"verifier trained on {t.height} other questions")


if __name__ == "__main__":
    main()
