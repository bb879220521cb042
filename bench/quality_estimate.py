"""Does the judged quality estimate cover the measured accuracy? GSM8K, the cheap tier's shadow sample judged
against the premium answer by shape (`sluice.contracts.agreement.compare_shapes`, numbers here), 20 seeds of the
sample at several shadow shares; the measured accuracy is the cheap tier's, graded against the references.

Data (read by path): ../shared/data/routing/gsm8k_responses.csv (Mixtral-8x7B = cheap, GPT-4-1106 = premium, recorded
answers) and ../shared/data/prompts/gsm8k/test.jsonl (references).

    .venv/bin/python bench/quality_estimate.py     # writes bench/results/quality_estimate.{json,md}
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sluice.contracts.agreement import compare_shapes  # noqa: E402
from sluice.contracts.grading import grade  # noqa: E402
from sluice.stats import wilson_interval  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results"
CHEAP, PREMIUM = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
SHARES = [0.05, 0.1, 0.2, 0.3]
SEEDS = 20


def main() -> dict:
    rec = pl.read_csv(SHARED / "routing" / "gsm8k_responses.csv")
    refs = {}
    for line in (SHARED / "prompts" / "gsm8k" / "test.jsonl").read_text().splitlines():
        t = json.loads(line)
        refs[t["question"]] = re.sub(r"[,$]", "", t["answer"].split("####")[-1]).strip()
    cheap, premium = rec[f"{CHEAP}_response"].to_list(), rec[f"{PREMIUM}_response"].to_list()
    correct = np.array([bool(grade(a, refs[q], "number")[0]) for q, a in zip(rec["prompt"], cheap)])
    verdicts = [compare_shapes(a, b, None, "number").acceptable for a, b in zip(cheap, premium)]
    judged = np.array([v is not None for v in verdicts])
    acceptable = np.array([bool(v) for v in verdicts])
    accuracy = float(correct.mean())
    rows = []
    for share in SHARES:
        n = int(round(share * len(cheap)))
        covered, widths, estimates = 0, [], []
        for seed in range(SEEDS):
            idx = np.random.default_rng(seed).choice(len(cheap), n, replace=False)
            idx = idx[judged[idx]]
            lo, hi = wilson_interval(int(acceptable[idx].sum()), len(idx))
            covered += lo <= accuracy <= hi
            widths.append(hi - lo)
            estimates.append(float(acceptable[idx].mean()))
        rows.append({"shadow_share": share, "n": n, "covered_of_20": covered,
                     "mean_estimate": round(float(np.mean(estimates)), 4),
                     "mean_interval_width": round(float(np.mean(widths)), 4)})
    return {"rows": len(cheap), "cheap_accuracy_measured": round(accuracy, 4),
            "agreement_with_premium_all_rows": round(float(acceptable[judged].mean()), 4),
            "judged_share": round(float(judged.mean()), 4), "by_share": rows}


def markdown(r: dict) -> str:
    lines = ["# The judged quality estimate against measured accuracy (GSM8K)", "",
             f"`bench/quality_estimate.py`: the cheap tier (Mixtral-8x7B) answers all {r['rows']} questions; a shadow "
             "sample is also answered by premium (GPT-4-1106, recorded answers) and each pair is judged by shape "
             "(same final number). The estimate is the share judged acceptable with its Wilson 95% interval; the "
             f"measured accuracy of the cheap tier, graded against the references, is {r['cheap_accuracy_measured']}.",
             "", f"On every row the pairs agree {r['agreement_with_premium_all_rows']} of the time "
             f"({r['judged_share']} of pairs judgeable by shape): agreement with premium sits below the cheap tier's "
             "accuracy where premium itself is wrong and the cheap answer right, so the estimate is biased low by "
             "premium's own errors, and a large sample's narrow interval can miss.", "",
             "| shadow share | n | interval covers measured accuracy (of 20 seeds) | mean estimate | mean width |",
             "|---|---|---|---|---|"]
    lines += [f"| {x['shadow_share']} | {x['n']} | {x['covered_of_20']} | {x['mean_estimate']} | "
              f"{x['mean_interval_width']} |" for x in r["by_share"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    result = main()
    (OUT / "quality_estimate.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "quality_estimate.md").write_text(markdown(result))
    print(markdown(result))
