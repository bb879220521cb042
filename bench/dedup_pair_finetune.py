"""Issue 21: does MiniLM fine-tuned on the shipped calibration pairs rank QQP's hard negatives well enough for
recall 0.18 on the QQP report part at a false-hit rate <= 0.01?

The study of cheap pair-score features (bench/dedup_quality_features.py) ended with "what is left: a stronger pair
model". This is the strongest one trainable here: all-MiniLM-L6-v2 fine-tuned as a siamese scorer, p = sigmoid(s *
cosine + b), on the candidate pairs (MiniLM cosine >= 0.6) of the shipped fit third of the labelled sets (QQP tuning
part, MRPC train, STS-B train; the synthetic swaps and edits are left out, the hard guards refuse them anyway): 3
epochs, AdamW lr 3e-5 with warm-up and linear decay, batch 32, seed 0. Its probability replaces the learned pair
score; the threshold per delta is chosen exactly as `sluice.stages.dedup.calibrate` does (the other two thirds,
upper 95% bound <= delta on every set) and measured on the report sets of bench/dedup_quality.py --full.

Two ways of counting the near stage: as today (its merges always hit), and gated (a near merge of a short prompt
must also pass the score's threshold; only exact copies are sure hits), since the near stage alone spends 0.0059 of
QQP report's 0.01 (26 false hits in 4,435 non-duplicate pairs).

    .venv/bin/python bench/dedup_pair_finetune.py   # ~35 min of training on 2 shared cores (scores cached in
                                                     # bench/.work/); writes bench/results/dedup_pair_finetune.*
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
import unicodedata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "data" / "samples")]

from dedup_quality import OUT, metrics  # noqa: E402
from dedup_quality_features import DELTAS, REPORT, _fit, _hard_vetoed, _pairs, ceilings, load_sets  # noqa: E402

from sluice.stages.dedup.calibrate import SCORE_GRID, LabelledPairs, choose_rule  # noqa: E402
from sluice.stages.dedup.pair_score import FEATURES  # noqa: E402

SCORES = ROOT / "bench" / ".work" / "dedup_finetune_scores.npz"
EPOCHS, LR, SEED, BATCH, MIN_COSINE, TRAIN_SETS = 3, 3e-5, 0, 32, 0.6, ("qqp_tune", "mrpc_train", "stsb_train")


def fine_tune(sets: dict) -> tuple[dict[str, np.ndarray], dict]:
    """Train on the fit third's candidate pairs; the probability of every set's scored pairs (-1 elsewhere)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from models.embeddings import model_path

    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    torch.manual_seed(SEED)
    random.seed(SEED)
    np.random.seed(SEED)
    tok = AutoTokenizer.from_pretrained(str(model_path()))
    enc = AutoModel.from_pretrained(str(model_path()), dtype=torch.float32)
    train = [(s["ta"][i], s["tb"][i], float(s["y"][i])) for k, s in sets.items() if k in TRAIN_SETS
             for i in np.flatnonzero(s["fit"]) if np.nan_to_num(s["cosine"][i], nan=-1) >= MIN_COSINE]
    scale, bias = torch.nn.Parameter(torch.tensor(20.0)), torch.nn.Parameter(torch.tensor(-17.0))

    def embed(texts):
        e = tok(list(texts), padding=True, truncation=True, max_length=48, return_tensors="pt")
        h, m = enc(**e).last_hidden_state, e["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)

    def logits(a, b):
        return scale * (embed(a) * embed(b)).sum(1) + bias

    opt = torch.optim.AdamW([{"params": enc.parameters(), "lr": LR}, {"params": [scale, bias], "lr": 1e-2}])
    steps = EPOCHS * ((len(train) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda st: min(1.0, (st + 1) / (0.1 * steps)) * max(0.0, (steps - st) / steps))
    t0 = time.perf_counter()
    enc.train()
    for _ in range(EPOCHS):
        random.shuffle(train)
        for lo in range(0, len(train), BATCH):
            a, b, y = zip(*train[lo:lo + BATCH])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits(a, b), torch.tensor(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    enc.eval()
    scores = {}
    with torch.inference_mode():
        for k, s in sets.items():
            out = np.full(len(s["y"]), -1.0)
            idx = np.flatnonzero(np.nan_to_num(s["cosine"], nan=-1.0) >= 0.8)
            for lo in range(0, len(idx), 64):
                ii = idx[lo:lo + 64]
                out[ii] = torch.sigmoid(logits([s["ta"][i] for i in ii], [s["tb"][i] for i in ii])).numpy()
            scores[k] = out
    return scores, {"train_pairs": len(train), "positives": int(sum(t[2] for t in train)), "steps": steps,
                    "seconds": round(time.perf_counter() - t0, 1)}


def _norm(t: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", t).lower().split())


def labelled(k: str, s: dict, score: np.ndarray, gate_near: bool) -> LabelledPairs:
    if not gate_near:
        return _pairs(k, s, score, _hard_vetoed(s, False))
    exact = np.array([_norm(a) == _norm(b) for a, b in zip(s["ta"], s["tb"])])
    unscored = np.nan_to_num(s["cosine"], nan=-1.0) < 0.8
    sure = exact | ((s["other_hit"] | s["near_chars"]) & unscored)
    return LabelledPairs(np.full(len(s["y"]), k, object), s["words"], score, sure,
                         _hard_vetoed(s, False) & ~exact, s["y"])


def measure(sets: dict, scores: dict, gate_near: bool) -> dict:
    lps = {k: labelled(k, s, scores[k], gate_near) for k, s in sets.items()}
    calib = LabelledPairs.concat([lps[k].subset(~s["fit"]) for k, s in sets.items() if s["part"] == "cal"])
    rep = sets["qqp_report"]
    if gate_near:  # the ceiling over the gated pairs: `ceilings` reads other_hit | near_chars as sure hits
        rep = {**rep, "other_hit": lps["qqp_report"].other_hit, "near_chars": np.zeros(len(rep["y"]), bool)}
    rows = []
    for delta in DELTAS:
        c = choose_rule(calib, delta, (48,), grid=SCORE_GRID)
        cells = {k: metrics(lps[k].hits(c.rule), sets[k]["y"]) for k in REPORT}
        rows.append({"delta": delta, "threshold": c.rule.thresholds[0], "bound": round(c.bound, 5),
                     "sets": {k: {**m, "within_delta": m["false_hit_rate"] is None or m["false_hit_rate"] <= delta}
                              for k, m in cells.items()}})
    return {"per_delta": rows, "qqp_report_ceiling": ceilings(rep, scores["qqp_report"], lps["qqp_report"].vetoed)}


def markdown(r: dict) -> str:
    t = r["training"]
    lines = ["# A fine-tuned pair model for semantic reuse (bench/dedup_pair_finetune.py, issue 21)", "",
             f"all-MiniLM-L6-v2 fine-tuned (siamese, p = sigmoid(s * cosine + b)) on {t['train_pairs']} candidate "
             f"pairs ({t['positives']} duplicates) of the shipped fit third, {t['steps']} steps "
             f"({t['seconds']} s on 2 shared cores); threshold per delta chosen on the other two thirds; measured "
             "on the report sets, which none of it saw. Cells: false-hit rate / recall (**over**: above delta). "
             "Ceiling: thresholds picked on the QQP report part itself. Target: recall >= 0.18 at <= 0.01.", "",
             "| scorer | near stage | " + " | ".join(f"delta {d}" for d in DELTAS)
             + " | other report sets: highest false-hit rate minus delta (<= 0: within) | ceiling: false-hit at recall 0.18 | "
             "ceiling: recall at false-hit 0.01 |", "|---|---|" + "---|" * (len(DELTAS) + 3)]
    for v in r["variants"]:
        cells = []
        for row in v["per_delta"]:
            m = row["sets"]["qqp_report"]
            cells.append(f"{m['false_hit_rate']}{'' if m['within_delta'] else ' **over**'} / {m['recall']}")
        other = max((row["sets"][k]["false_hit_rate"] or 0) - row["delta"] for row in v["per_delta"]
                    for k in REPORT[1:])
        c = v["qqp_report_ceiling"]
        lines.append(f"| {v['scorer']} | {'gated' if v['gate_near'] else 'as today'} | " + " | ".join(cells)
                     + f" | {round(other, 4)} | {c['false_hit_at_recall_0.18']} | {c['recall_at_false_hit_0.01']} |")
    return "\n".join(lines + ["", r["verdict"], ""])


def main() -> None:
    t0 = time.perf_counter()
    sets = load_sets()
    cal = {k: s for k, s in sets.items() if s["part"] == "cal"}
    for s in sets.values():
        s["ex"] = np.zeros((len(s["y"]), 13))  # `_fit` reads the study's extra columns; the shipped ones only here
    shipped, _ = _fit(cal, list(FEATURES), 1.0, False, lambda s: s["fit"])
    if SCORES.exists():
        z = np.load(SCORES, allow_pickle=True)
        tuned, training = {k: z[k] for k in sets}, json.loads(str(z["training"]))
    else:
        tuned, training = fine_tune(sets)
        SCORES.parent.mkdir(parents=True, exist_ok=True)
        np.savez(SCORES, training=json.dumps(training), **tuned)
    variants = []
    for name, scores in (("learned pair score (shipped)", {k: shipped(s) for k, s in sets.items()}),
                         ("fine-tuned MiniLM", tuned)):
        for gate in (False, True):
            variants.append({"scorer": name, "gate_near": gate, **measure(sets, scores, gate)})
    best = max((v for v in variants), key=lambda v: v["per_delta"][1]["sets"]["qqp_report"]["recall"])
    m = best["per_delta"][1]["sets"]["qqp_report"]
    met = m["recall"] >= 0.18 and m["within_delta"]
    verdict = (f"At delta 0.01 the best is {best['scorer']} (near stage "
               f"{'gated' if best['gate_near'] else 'as today'}): recall {m['recall']} at false-hit "
               f"{m['false_hit_rate']}: target {'met' if met else 'not met'}. Best ceiling (thresholds on the "
               f"report part itself): recall {max(v['qqp_report_ceiling']['recall_at_false_hit_0.01'] for v in variants)}"
               " at false-hit 0.01.")
    r = {"training": training, "variants": variants, "verdict": verdict, "seconds": round(time.perf_counter() - t0, 1)}
    (OUT / "dedup_pair_finetune.json").write_text(json.dumps(r, indent=1, default=str) + "\n")
    (OUT / "dedup_pair_finetune.md").write_text(markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
