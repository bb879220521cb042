"""Issue 17: do a small causal LM's features of the question rank Mixtral's failures better than MiniLM does?

    .venv/bin/python bench/routing_lm_eval.py smollm2=bench/.work/smollm2_lm.npz gemma=bench/.work/gemma_lm.npz
        # features from bench/routing_lm_features.py; writes bench/results/routing_lm_features.{json,md}

Every model's features are scored as they are and, as a null, Gaussian noise of the same shapes in their place
(default_rng(0)): a figure the noise reaches too is not a gain.

Protocol of bench/routing_ensemble.py: outer folds default_rng(SEED + 1).permutation(n) % 5, every setting (L2,
k, PCA fitted on training rows) chosen inside the four training folds by inner 5-fold APGR (`training.folds`).
Every rank average is declared below before any was scored (no choice among them is made on the scored fold).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]
from routing_ensemble import Candidates, bootstrap_shares, percentile, share_for_95  # noqa: E402
from routing_quality import CHEAP, DATA, PREMIUM, SEED, accuracy_curve, cached_embeddings, no_curve, order_by, summarise  # noqa: E402

from sluice.stages.route.features import text_features  # noqa: E402
from sluice.stages.route.knn import train_knn  # noqa: E402
from sluice.stages.route.per_tier import train_per_tier  # noqa: E402

TEXT_L2 = (10.0, 100.0, 1000.0)
HIDDEN_L2 = (100.0, 300.0, 1000.0, 3000.0, 10000.0)
PCA_DIM = 128


def unit(v):
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


class LmCandidates(Candidates):
    def __init__(self, labels, embeddings, lm):
        super().__init__(labels, embeddings)
        self.nll = lm["nll"].astype(np.float64)
        self.hidden = np.hstack([lm["mid"], lm["last"]]).astype(np.float64)
        self.mid = lm["mid"].astype(np.float64)
        self.tf = text_features(labels["prompt"].to_list())

    def fits(self):
        return {"logistic": self.logistic, "knn": self.knn, "per_tier": self.per_tier,
                "lm_nll": self.lm_nll, "lm_hidden": self.lm_hidden, "lm_logistic": self.lm_logistic,
                "lm_knn": self.lm_knn, "lm_per_tier": self.lm_per_tier}

    # --- helpers: everything unsupervised (centre, PCA) is fitted on the training rows only
    def _pca(self, rows, k=PCA_DIM):
        x = self.hidden[rows]
        mean, scale = x.mean(0), x.std(0) + 1e-6
        _, _, vt = np.linalg.svd((x - mean) / scale, full_matrices=False)
        return lambda idx: ((self.hidden[idx] - mean) / scale) @ vt[:k].T

    def _mid_unit(self, rows):
        centre = self.mid[rows].mean(0)
        return lambda idx: unit(self.mid[idx] - centre)

    def _cv_head(self, x_all, rows, grid):
        return self.cv_head(x_all, rows, grid)

    # --- candidates
    def lm_nll(self, rows):
        x = np.hstack([self.tf, self.nll])
        h, l2 = self._cv_head(x, rows, (1.0,) + TEXT_L2)
        return (lambda te: h(x[te])), {"l2": l2}

    def lm_hidden(self, rows):
        proj = self._pca(rows)
        x = np.zeros((len(self.y), PCA_DIM))
        x[:] = proj(np.arange(len(self.y)))  # projection fitted on training rows; applied row-wise
        h, l2 = self._cv_head(x, rows, HIDDEN_L2)
        return (lambda te: h(x[te])), {"l2": l2}

    def lm_logistic(self, rows):
        """The shipped logistic router's shape with the LM in MiniLM's place: a text head and a text + nll + PCA(LM
        hidden) head, averaged, each L2 by inner CV."""
        proj = self._pca(rows)
        full = np.hstack([self.tf, self.nll, proj(np.arange(len(self.y)))])
        h1, l1 = self._cv_head(self.tf, rows, TEXT_L2)
        h2, l2 = self._cv_head(full, rows, HIDDEN_L2)
        return (lambda te: (h1(self.tf[te]) + h2(full[te])) / 2), {"text_l2": l1, "lm_l2": l2}

    def lm_knn(self, rows):
        emb = self._mid_unit(rows)
        r = train_knn(self._sub(rows), embeddings=emb(rows))
        return ((lambda te: r.score(self.labels["prompt"][te.tolist()], emb(te))),
                {"k": r.k, "weighting": r.weighting, "text_weight": r.text_weight})

    def lm_per_tier(self, rows):
        proj = self._pca(rows)
        r = train_per_tier(self._sub(rows), ["cheap", "premium"], embeddings=proj(rows))
        return (lambda te: r.score(self.labels["prompt"][te.tolist()], proj(te))), {}


# declared before scoring: name -> members of a percentile-rank average
RANKS = {
    "rank_kinds": ("logistic", "knn", "per_tier"),
    "rank_kinds+lm_logistic": ("logistic", "knn", "per_tier", "lm_logistic"),
    "rank_kinds+lm_nll": ("logistic", "knn", "per_tier", "lm_nll"),
    "rank_lm_kinds": ("lm_logistic", "lm_knn", "lm_per_tier"),
    "rank_six": ("logistic", "knn", "per_tier", "lm_logistic", "lm_knn", "lm_per_tier"),
}


def evaluate(lm) -> dict:
    frame = pl.read_csv(DATA)
    labels = pl.DataFrame({"prompt": frame["prompt"], "cheap_ok": frame[CHEAP], "premium_ok": frame[PREMIUM]})
    emb = cached_embeddings("gsm8k_prompt_emb", frame["prompt"].to_list())
    outer = np.random.default_rng(SEED + 1).permutation(frame.height) % 5
    cand = LmCandidates(labels, emb, lm)
    fits = cand.fits()
    oof = {m: np.zeros(labels.height) for m in [*fits, *RANKS]}
    chose = []
    for f in range(5):
        t0 = time.perf_counter()
        tr, te = np.nonzero(outer != f)[0], np.nonzero(outer == f)[0]
        trained = {name: fit(tr) for name, fit in fits.items()}
        for name, (score, _) in trained.items():
            oof[name][te] = score(te)
        for name, members in RANKS.items():
            oof[name][te] = np.mean([percentile(oof[k][te]) for k in members], axis=0)
        chose.append({name: t[1] for name, t in trained.items() if t[1]})
        print(f"fold {f}: {time.perf_counter() - t0:.0f}s {chose[-1]}", flush=True)
    c, p = cand.cheap, cand.premium
    rng = np.random.default_rng(SEED)
    summ = {k: no_curve(summarise(accuracy_curve(order_by(s, rng), c, p), c, p)) for k, s in oof.items()}
    return {"apgr": {k: v.get("apgr") for k, v in summ.items()},
            "share": {k: round(float(share_for_95(v, c, p)), 4) for k, v in oof.items()},
            "interval": bootstrap_shares(oof, c, p), "chose": chose}


def null_like(lm) -> dict:
    rng = np.random.default_rng(0)
    return {k: rng.standard_normal(lm[k].shape).astype(np.float32) for k in ("mid", "last", "nll")}


def markdown(r: dict) -> str:
    models = list(r["models"])
    cols = [m for name in models for m in (name, name + " (noise)")]
    lines = ["# Prompt-only routing with a small LM's features (issue 17)", "",
             "`bench/routing_lm_features.py` (features), `bench/routing_lm_eval.py` (this table). All 1,319 GSM8K "
             "rows, the 5 outer folds of bench/routing_ensemble.py, every setting chosen inside the training folds. "
             "Cells: premium share for 95% of all-premium accuracy (target 0.50) / APGR / bootstrap 90% interval "
             "of the share. `(noise)`: the same methods with Gaussian noise of the same shapes in place of the LM's "
             "features, the null a gain must beat.", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for k in r["models"][models[0]]["share"]:
        cells = []
        for name in models:
            for m in (r["models"][name], r["null"][name]):
                lo, hi = m["interval"][k]
                cells.append(f"{m['share'][k]:.4f} / {m['apgr'][k]} / {lo}-{hi}")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", r["verdict"], ""])


def verdict(r: dict) -> str:
    """Per model: the best method that reads its features, the same method on noise, and the MiniLM-only best."""
    lines = []
    for name, m in r["models"].items():
        with_lm = [k for k in m["share"] if k.startswith("lm_") or (k in RANKS and any(
            x.startswith("lm_") for x in RANKS[k]))]
        best = min(with_lm, key=lambda k: m["share"][k])
        null = r["null"][name]["share"][best]
        why = []
        if m["share"][best] >= null:
            why.append(f"noise in their place does as well ({null})")
        if m["apgr"][best] <= m["apgr"]["rank_kinds"]:
            why.append(f"its APGR is below rank_kinds' ({m['apgr'][best]} vs {m['apgr']['rank_kinds']}: the "
                       "whole curve is no better, only the one point moved)")
        lo, hi = m["interval"]["rank_kinds"]
        if lo <= m["share"][best] <= hi:
            why.append(f"the share is inside rank_kinds' own 90% interval ({lo} to {hi})")
        lines.append(f"- {name} ({r['feature_seconds'][name]} s of features): best method with its features {best} "
                     f"at {m['share'][best]} (APGR {m['apgr'][best]}); the same method with noise in their place "
                     f"{null}; without them, rank_kinds {m['share']['rank_kinds']} (APGR {m['apgr']['rank_kinds']}). "
                     + ("Not a gain: " + "; ".join(why) + ". Target 0.50 not met." if why else
                        ("A gain; meets 0.50." if m["share"][best] <= 0.5 else "A gain; 0.50 not met.")))
    return "\n".join(lines)


def main():
    models = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    out = {"models": {}, "null": {}}
    for name, path in models.items():
        lm = dict(np.load(path))
        out["models"][name] = evaluate(lm)
        out["null"][name] = evaluate({**lm, **null_like(lm)})
        out.setdefault("feature_seconds", {})[name] = round(float(lm["seconds"]), 1)
    out["verdict"] = verdict(out)
    res = BENCH / "results"
    (res / "routing_lm_features.json").write_text(json.dumps(out, indent=1, default=str) + "\n")
    (res / "routing_lm_features.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
