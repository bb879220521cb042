"""Shadow sampling: uniform, or stratified towards the routing boundary? Measured on GSM8K over simulated nights.

Each night the cheap tier answers the batch, a shadow sample of it is also answered by premium, and the pairs become
router labels (here the labels are the graded verdicts: cheap right, premium right). The router is retrained on
every label so far. The question is which rows a night's label budget should buy:

    uniform      every cheap row equally likely (`sluice.stages.review.shadow.shadow_sample`, today's default)
    boundary     half the sample uniform, half drawn with probability falling off with the distance of the row's
                 router score from the routing threshold (the rows the router is least sure about, where a label
                 is worth most for the router: uncertainty sampling)

Setup (5 folds; per fold the held-out fifth is the test set and the rest is the pool the nights draw from): the
first router is trained on 100 uniform labels, then NIGHTS nights of LABELS_PER_NIGHT labels each, retraining
after each night (text features, as `sluice router train --no-embeddings`). Scored on the test fold: the router's
AUROC for "premium needed" and the accuracy when its top 45% of rows go to premium. Repeated over SEEDS seeds.

For the quality estimate the uniform half is what an unbiased estimate can use (the boundary half over-samples the
hard rows): the estimate's n halves at the same label spend, so stratification is only worth wiring if the router
gains enough to pay for that.

    .venv/bin/python bench/shadow_sampling.py    # writes bench/results/shadow_sampling.{json,md}
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sluice.contracts.grading import grade  # noqa: E402
from sluice.stages.route.learned import train_router  # noqa: E402
from sluice.stats import auroc  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "bench" / "results"
CHEAP, PREMIUM = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
SEEDS, NIGHTS, SEED_LABELS, LABELS_PER_NIGHT, SHARE = 10, 4, 100, 100, 0.45


def load() -> pl.DataFrame:
    refs = {}
    for line in (SHARED / "prompts" / "gsm8k" / "test.jsonl").read_text().splitlines():
        t = json.loads(line)
        refs[t["question"]] = re.sub(r"[,$]", "", t["answer"].split("####")[-1]).strip()
    rec = pl.read_csv(SHARED / "routing" / "gsm8k_responses.csv")
    ok = {name: [grade(a, refs[p], "number")[0] is True for p, a in zip(rec["prompt"], rec[f"{col}_response"])]
          for name, col in (("cheap_ok", CHEAP), ("premium_ok", PREMIUM))}
    return rec.select("prompt").with_columns(pl.Series("cheap_ok", ok["cheap_ok"]),
                                             pl.Series("premium_ok", ok["premium_ok"]))


def pick(rng: np.random.Generator, pool: np.ndarray, scores: np.ndarray, k: int, how: str) -> np.ndarray:
    """k rows of `pool` (indices), uniformly or half towards the boundary of routing the top SHARE to premium."""
    if how == "uniform":
        return rng.choice(pool, k, replace=False)
    half = rng.choice(pool, k // 2, replace=False)
    rest = np.setdiff1d(pool, half)
    s = scores[rest]
    threshold = np.quantile(scores[pool], 1 - SHARE)
    width = max(float(np.std(s)) / 4, 1e-6)
    p = np.exp(-np.abs(s - threshold) / width)
    return np.concatenate([half, rng.choice(rest, k - len(half), replace=False, p=p / p.sum())])


def evaluate(router, test: pl.DataFrame) -> tuple[float, float]:
    s = router.score(test["prompt"])
    cheap, prem = test["cheap_ok"].to_numpy(), test["premium_ok"].to_numpy()
    need = ~cheap & prem
    k = int(round(SHARE * len(s)))
    top = np.zeros(len(s), bool)
    top[np.argsort(-s, kind="stable")[:k]] = True
    return auroc(s, need), float(np.where(top, prem, cheap).mean())


def main() -> dict:
    df = load()
    folds = np.random.default_rng(20261204).permutation(df.height) % 5
    out: dict[str, list] = {"uniform": [], "boundary": []}
    t0 = time.perf_counter()
    for seed in range(SEEDS):
        for k in range(5):
            pool_all = np.nonzero(folds != k)[0]
            test = df[np.nonzero(folds == k)[0].tolist()]
            for how in out:
                rng = np.random.default_rng(seed * 10 + k)
                labelled = rng.choice(pool_all, SEED_LABELS, replace=False)
                router = train_router(df[labelled.tolist()], use_embeddings=False, l2_text=10.0)
                for _ in range(NIGHTS):
                    pool = np.setdiff1d(pool_all, labelled)
                    scores = np.zeros(df.height)
                    scores[pool] = router.score(df[pool.tolist()]["prompt"])
                    labelled = np.concatenate([labelled, pick(rng, pool, scores, LABELS_PER_NIGHT, how)])
                    router = train_router(df[labelled.tolist()], use_embeddings=False, l2_text=10.0)
                out[how].append(evaluate(router, test))
    summary = {}
    for how, vals in out.items():
        a = np.array(vals)
        summary[how] = {"auroc_mean": round(float(a[:, 0].mean()), 4), "auroc_sd": round(float(a[:, 0].std()), 4),
                        "accuracy_at_share_mean": round(float(a[:, 1].mean()), 4),
                        "accuracy_at_share_sd": round(float(a[:, 1].std()), 4)}
    diff = np.array(out["boundary"]) - np.array(out["uniform"])  # paired: same seed, fold and seed labels
    summary["boundary_minus_uniform"] = {
        "auroc_mean": round(float(diff[:, 0].mean()), 4),
        "auroc_se": round(float(diff[:, 0].std(ddof=1) / np.sqrt(len(diff))), 4),
        "accuracy_mean": round(float(diff[:, 1].mean()), 4),
        "accuracy_se": round(float(diff[:, 1].std(ddof=1) / np.sqrt(len(diff))), 4),
        "boundary_better_auroc_runs": int((diff[:, 0] > 0).sum()), "runs": len(diff)}
    return {"rows": df.height, "seeds": SEEDS, "nights": NIGHTS, "seed_labels": SEED_LABELS,
            "labels_per_night": LABELS_PER_NIGHT, "premium_share": SHARE, "results": summary,
            "seconds": round(time.perf_counter() - t0, 1)}


def markdown(r: dict) -> str:
    s = r["results"]
    d = s["boundary_minus_uniform"]
    verdict = ("stratified sampling beats uniform beyond two standard errors"
               if d["auroc_mean"] > 2 * d["auroc_se"] and d["accuracy_mean"] > 0 else
               "stratified sampling does not beat uniform beyond two standard errors")
    lines = ["# Shadow sampling: uniform against stratified towards the routing boundary (GSM8K)", "",
             f"`bench/shadow_sampling.py`: {r['rows']} questions, 5 folds x {r['seeds']} seeds; a router trained on "
             f"{r['seed_labels']} uniform labels, then {r['nights']} nights of {r['labels_per_night']} shadow labels "
             f"each, retrained nightly (text features). Test fold: AUROC for \"premium needed\" and accuracy with "
             f"the router's top {r['premium_share']} of rows on premium.", "",
             "| sampling | AUROC (mean ± sd) | accuracy at the share (mean ± sd) |", "|---|---|---|"]
    for how in ("uniform", "boundary"):
        x = s[how]
        lines.append(f"| {how} | {x['auroc_mean']} ± {x['auroc_sd']} | {x['accuracy_at_share_mean']} ± "
                     f"{x['accuracy_at_share_sd']} |")
    lines += ["", f"Paired difference (boundary - uniform, same seed and fold): AUROC {d['auroc_mean']} "
              f"(s.e. {d['auroc_se']}), accuracy {d['accuracy_mean']} (s.e. {d['accuracy_se']}); boundary better "
              f"in {d['boundary_better_auroc_runs']} of {d['runs']} runs. Verdict: {verdict}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    result = main()
    (OUT / "shadow_sampling.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "shadow_sampling.md").write_text(markdown(result))
    print(markdown(result))
