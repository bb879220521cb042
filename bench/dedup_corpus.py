"""The prompt corpus the dedup benchmarks run on, built from ../shared/data (read by path, never copied).

Real prompts: ShareGPT first user turns (8,700; about 10% exact duplicates; long tail of lengths) and the QQP dev
questions (23,498 short questions). Synthetic variations reach any size: each extra row is a real prompt with
one edit drawn at random (case/whitespace change, a typo, a dropped or repeated word, a changed number, an added
"please"), so the corpus holds exact, near and non-duplicates in realistic proportions.
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from pathlib import Path

import pyarrow as pa

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def real_prompts() -> list[str]:
    out = []
    with gzip.open(SHARED / "prompts" / "sharegpt_first_turns_dev.jsonl.gz", "rt") as f:
        out += [json.loads(line)["prompt"] for line in f]
    with open(SHARED / "pairs" / "qqp_dev.tsv", newline="") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            if len(row) >= 5:
                out += [row[3], row[4]]
    return [p for p in out if p and p.strip()]


def _vary(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    kind = rng.randrange(6)
    if kind == 0:
        return "  " + text.upper() if rng.random() < 0.5 else text.lower() + " "
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
    return text + " Thanks."


def prompt_corpus(n: int, seed: int = 0) -> pa.Table:
    base = real_prompts()
    rng = random.Random(seed)
    prompts = base[:n]
    while len(prompts) < n:
        prompts.append(_vary(base[rng.randrange(len(base))], rng))
    rng.shuffle(prompts)
    return pa.table({"id": [f"p{i}" for i in range(n)], "prompt": prompts})
