"""Issue 17: does the prompt-only router get better with more labels, the way a router that learns every night
would get them? A learning curve on GSM8K (all 1,319 rows, the 5 outer folds of bench/routing_ensemble.py): each
method is trained on a random fraction of the four training folds (5 draws per fraction) and scores the fifth fold
in full; the out-of-fold scores give APGR and the premium share for 95% of all-premium accuracy (target 0.50), the
mean and the range over the draws. A curve still rising at the full training set says more nights' labels would
help; a flat one says the figure is the prompt's limit, not the labels'.

    .venv/bin/python bench/routing_learning_curve.py   # writes bench/results/routing_learning_curve.{json,md}
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

from routing_ensemble import Candidates, percentile, share_for_95  # noqa: E402
from routing_quality import CHEAP, DATA, PREMIUM, SEED, cached_embeddings  # noqa: E402

from sluice.stages.route.training import apgr  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75, 1.0)
DRAWS = 5
METHODS = ("logistic", "knn", "per_tier", "rank_kinds")


def curve() -> dict:
    frame = pl.read_csv(DATA)
    labels = pl.DataFrame({"prompt": frame["prompt"], "cheap_ok": frame[CHEAP], "premium_ok": frame[PREMIUM]})
    cand = Candidates(labels, cached_embeddings("gsm8k_prompt_emb", frame["prompt"].to_list()))
    outer = np.random.default_rng(SEED + 1).permutation(frame.height) % 5
    fits = cand.fits()
    out = {}
    for frac in FRACTIONS:
        runs = {m: {"apgr": [], "share": []} for m in METHODS}
        for draw in range(DRAWS if frac < 1.0 else 1):  # the full training set is one draw
            rng = np.random.default_rng(1000 * draw + int(frac * 100))
            oof = {m: np.zeros(labels.height) for m in METHODS}
            for f in range(5):
                tr, te = np.nonzero(outer != f)[0], np.nonzero(outer == f)[0]
                tr = np.sort(rng.choice(tr, int(round(frac * len(tr))), replace=False))
                for m in METHODS[:3]:
                    oof[m][te] = fits[m](tr)[0](te)
                oof["rank_kinds"][te] = np.mean([percentile(oof[m][te]) for m in METHODS[:3]], axis=0)
            for m in METHODS:
                runs[m]["apgr"].append(round(apgr(oof[m], cand.cheap, cand.premium), 4))
                runs[m]["share"].append(round(share_for_95(oof[m], cand.cheap, cand.premium), 4))
        out[str(frac)] = {"training_rows": int(round(frac * np.mean([(outer != f).sum() for f in range(5)]))),
                          "methods": runs}
        print(frac, {m: (np.mean(r["apgr"]).round(4), np.mean(r["share"]).round(4)) for m, r in runs.items()},
              flush=True)
    return out


def markdown(r: dict) -> str:
    lines = ["# Routing learning curve on GSM8K (bench/routing_learning_curve.py, issue 17)", "",
             "Each method trained on a random fraction of the four training folds (5 draws; the full set once), "
             "scored on the fifth fold in full, all 1,319 rows out of fold. Cells: mean APGR / mean premium share for "
             "95% of all-premium accuracy (the range over draws in brackets). Target share: 0.50.", "",
             "| training rows per fold | " + " | ".join(METHODS) + " |", "|---|" + "---|" * len(METHODS)]
    for frac, v in r["curve"].items():
        cells = []
        for m in METHODS:
            a, s = v["methods"][m]["apgr"], v["methods"][m]["share"]
            rng = f" [{min(s)}-{max(s)}]" if len(s) > 1 else ""
            cells.append(f"{np.mean(a):.4f} / {np.mean(s):.4f}{rng}")
        lines.append(f"| {v['training_rows']} ({frac}) | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", r["verdict"], ""])


def verdict(c: dict) -> str:
    keys = list(c)
    out = []
    for m in METHODS:
        a = [float(np.mean(c[k]["methods"][m]["apgr"])) for k in keys]
        s = [float(np.mean(c[k]["methods"][m]["share"])) for k in keys]
        out.append(f"{m}: APGR {a[0]:.4f} -> {a[-1]:.4f} from {c[keys[0]]['training_rows']} to "
                   f"{c[keys[-1]]['training_rows']} rows (last step {a[-1] - a[-2]:+.4f}), share {s[0]:.4f} -> "
                   f"{s[-1]:.4f}")
    rows = np.array([c[k]["training_rows"] for k in keys], float)
    share = np.array([np.mean(c[k]["methods"]["rank_kinds"]["share"]) for k in keys])
    slope, icpt = np.polyfit(np.log2(rows), share, 1)
    need = 2 ** ((0.50 - icpt) / slope) if slope < 0 else None
    last = (share[-1] - share[-2]) / np.log2(rows[-1] / rows[-2])
    out.append(f"Projection, not a measurement: a straight line through rank_kinds' share against log2(training "
               f"rows) falls {slope:+.4f} per doubling of the labels (the last step alone {last:+.4f} per "
               f"doubling: the curve bends, so the line is optimistic); it would reach 0.50 at about "
               + (f"{need:,.0f} training rows ({need / rows[-1]:.1f}x the 1,055 here; at the last step's rate "
                  f"{rows[-1] * 2 ** ((0.50 - share[-1]) / last):,.0f}), more labelled GSM8K-like rows "
                  "than this data set has; nightly verdicts of a real batch would have to supply them, and whether "
                  "the line holds past 1,055 rows cannot be checked here." if need else "never (the curve is flat)."))
    return "- " + "\n- ".join(out)


def main() -> None:
    t0 = time.perf_counter()
    c = curve()
    r = {"curve": c, "verdict": verdict(c), "seconds": round(time.perf_counter() - t0, 1)}
    (BENCH / "results" / "routing_learning_curve.json").write_text(json.dumps(r, indent=1) + "\n")
    (BENCH / "results" / "routing_learning_curve.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
