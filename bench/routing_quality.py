"""Routing quality on GSM8K: accuracy against premium share for the learned router and its baselines.

Data: ../shared/data/routing/gsm8k_responses.csv (RouteLLM's eval data; read by path, never copied): 1,319 GSM8K
prompts, whether Mixtral-8x7B (the cheap tier) and GPT-4 (the premium tier) answered correctly, and both answers.
Labels: cheap_ok = Mixtral correct, premium_ok = GPT-4 correct.

Protocol: one split fixed by SEED (70% train / 30% test). The router's regularisation is chosen by 5-fold
cross-validation on the training rows only (APGR), then it is refit on all training rows and scored on the test
rows. For a premium share f, the top round(f x n) test rows by score go to premium; accuracy is premium_ok on
those rows and cheap_ok on the others.
    APGR         area under the performance-gap-recovered curve, (acc(f) - acc_cheap) / (acc_premium - acc_cheap),
                 over f in [0, 1] (RouteLLM's metric; random routing = 0.5)
    share@95     the smallest premium share whose accuracy reaches 95% of all-premium accuracy
Baselines: random (mean of 200 random orders), length (longest prompts to premium), oracle (rows only premium
gets right first). The cascade variant is measured too: the cheap tier answers every row first and a scorer (the
same logistic model over the prompt's text features and `sluice.stages.review.cascade.answer_signals` of the cheap answer) picks
which answers to redo on premium; its premium share is on top of one cheap call per row.
Because 396 test rows make "share for 95%" noisy (one row is 0.25 points), every method is also scored on all
1,319 rows with 5-fold out-of-fold scores (same settings as chosen on the training split): `all_rows_5fold`.

Router kinds (`sluice router train --kind`): knn (`sluice.stages.route.knn`), per_tier
(`sluice.stages.route.per_tier`, P(premium right) - P(cheap right)), auto (`sluice.stages.route.choose`: the kind
with the best out-of-fold APGR on the training rows) and router_product (the logistic router at its shipped
defaults, the `logistic` candidate of auto). Each is trained on the training rows only, its own settings (kNN's k
and weighting, auto's choice) chosen by cross-validation inside them: on the split, the 923 training rows; on all
rows, the four training folds of each of the 5 folds. Nothing is tuned on the rows it is scored on.
Two label sets: RouteLLM's (the csv's correctness columns: the tables above `graded`), and `graded`: both answers
graded as the pipeline grades them (`sluice.contracts.grading.grade(answer, reference, "number")` against
../shared/data/prompts/gsm8k/test.jsonl), which counts answers like "$6.00" that RouteLLM's labels miss.

Arithmetic-cue features and rank-average ensembles of the kinds (`bench/routing_ensemble.py`) are scored on all
rows 5-fold too, every setting chosen inside the training folds: `ensemble` in the results.

    .venv/bin/python bench/routing_quality.py    # writes bench/results/routing_quality.{json,md}
    .venv/bin/python bench/routing_quality.py --ensemble-only    # reruns only the `ensemble` section
Embeddings are cached in bench/.work/ (git-ignored).
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
from routing_budget import brevity_on_sharegpt, budget_sweep
from routing_ensemble import all_rows_5fold as ensemble_out_of_fold
from routing_ensemble import bootstrap_shares, reference_difficulty
from routing_report import CURVE, markdown

from sluice.contracts.grading import grade
from sluice.stages.review.cascade import answer_signals
from sluice.stages.route.choose import train as train_kind
from sluice.stages.route.features import EMBED_MAX_TOKENS, router_features, text_features
from sluice.stages.route.learned import train_router
from sluice.stats import fit_logistic

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "routing" / "gsm8k_responses.csv"
WORK = ROOT / "bench" / ".work"
OUT = ROOT / "bench" / "results"
REFERENCES = ROOT.parent / "shared" / "data" / "prompts" / "gsm8k" / "test.jsonl"
KINDS = {"router_product": "logistic", "knn": "knn", "per_tier": "per-tier", "auto": "auto"}
SEED = 20260124
CHEAP, PREMIUM = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
L2_GRID = [1.0, 10.0, 100.0, 1000.0, 3000.0, 10000.0, 30000.0]


def cached_embeddings(name: str, texts: list[str]) -> np.ndarray:
    path = WORK / f"{name}.npy"
    if path.exists():
        e = np.load(path)
        if len(e) == len(texts):
            return e
    from models.embeddings import embed

    WORK.mkdir(parents=True, exist_ok=True)
    e = embed(texts, max_length=EMBED_MAX_TOKENS)
    np.save(path, e)
    return e


def accuracy_curve(order: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray) -> np.ndarray:
    """acc[k] = accuracy when the first k rows of `order` go to premium, k = 0..n."""
    n = len(order)
    gain = (premium_ok[order].astype(float) - cheap_ok[order].astype(float))
    return (cheap_ok.sum() + np.concatenate([[0.0], np.cumsum(gain)])) / n


def order_by(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    tiebreak = rng.random(len(scores))
    return np.lexsort((tiebreak, -scores))


def summarise(acc: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray) -> dict:
    n = len(acc) - 1
    a_cheap, a_premium = cheap_ok.mean(), premium_ok.mean()
    pgr = (acc - a_cheap) / (a_premium - a_cheap)
    shares = np.arange(n + 1) / n
    apgr = float(np.sum((pgr[1:] + pgr[:-1]) / 2) / n)  # trapezoid over [0, 1]
    reach = np.nonzero(acc >= 0.95 * a_premium - 1e-12)[0]
    reach_pgr = np.nonzero(pgr >= 0.95 - 1e-12)[0]
    return {
        "apgr": round(apgr, 4),
        "share_for_95pct_of_premium_accuracy": round(float(shares[reach[0]]), 4) if len(reach) else None,
        "share_for_95pct_gap_recovered": round(float(shares[reach_pgr[0]]), 4) if len(reach_pgr) else None,
        "curve": {f"{f:.2f}": round(float(acc[int(round(f * n))]), 4) for f in CURVE},
    }


def cv_l2(x: np.ndarray, y: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray, rng) -> tuple[float, dict]:
    folds = rng.permutation(len(y)) % 5
    results = {}
    for l2 in L2_GRID:
        oof = np.zeros(len(y))
        for k in range(5):
            tr, te = folds != k, folds == k
            mean, scale = x[tr].mean(0), x[tr].std(0)
            scale[scale < 1e-9] = 1
            w, b = fit_logistic((x[tr] - mean) / scale, y[tr], l2=l2)
            oof[te] = ((x[te] - mean) / scale) @ w + b
        acc = accuracy_curve(order_by(oof, np.random.default_rng(0)), cheap_ok, premium_ok)
        results[l2] = summarise(acc, cheap_ok, premium_ok)["apgr"]
    best = max(results, key=results.get)
    return best, results


def graded_labels(df: pl.DataFrame) -> pl.DataFrame:
    """`cheap_ok` / `premium_ok` by the number grader against the GSM8K references, as `sluice run` grades."""
    refs = {}
    for line in REFERENCES.read_text().splitlines():
        t = json.loads(line)
        refs[t["question"]] = t["answer"].split("####")[-1].strip()
    ok = {name: [grade(a, refs[p], "number")[0] is True
                 for p, a in zip(df["prompt"].to_list(), df[f"{col}_response"].fill_null("").to_list())]
          for name, col in (("cheap_ok", CHEAP), ("premium_ok", PREMIUM))}
    return pl.DataFrame({"prompt": df["prompt"], **ok})


def kind_scores(labels: pl.DataFrame, emb: np.ndarray, train: np.ndarray, test: np.ndarray) -> tuple[dict, dict]:
    """Each router kind trained on `train` rows (settings chosen inside them) and scored on `test` rows:
    ({method: scores}, {method: what it chose})."""
    scores, chose = {}, {}
    for name, kind in KINDS.items():
        router = train_kind(kind, labels[train.tolist()], embeddings=emb[train])
        scores[name] = router.score(labels["prompt"][test.tolist()], emb[test])
        if kind == "knn":
            chose[name] = {"k": router.k, "weighting": router.weighting, "text_weight": router.text_weight}
        if kind == "auto":
            chose[name] = router.trained_on["auto"]
    return scores, chose


def kinds_out_of_fold(labels: pl.DataFrame, emb: np.ndarray, folds: np.ndarray) -> tuple[dict, list]:
    """5-fold out-of-fold scores of every router kind on all rows, and what each fold chose."""
    oof = {name: np.zeros(labels.height) for name in KINDS}
    chose = []
    for k in range(5):
        tr, te = np.nonzero(folds != k)[0], np.nonzero(folds == k)[0]
        scores, fold_chose = kind_scores(labels, emb, tr, te)
        for name, s in scores.items():
            oof[name][te] = s
        chose.append(fold_chose)
    return oof, chose


def no_curve(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if k != "curve"}


def graded_report(labels: pl.DataFrame, emb: np.ndarray, train: np.ndarray, test: np.ndarray,
                  folds: np.ndarray) -> dict:
    """The baselines and every router kind on the graded labels: the split, and all rows 5-fold."""
    c, p = labels["cheap_ok"].to_numpy(), labels["premium_ok"].to_numpy()
    length = np.array([len(q) for q in labels["prompt"].to_list()], dtype=float)
    oracle = (p & ~c).astype(float) - (c & ~p).astype(float)

    def table(rows: np.ndarray, scored: dict) -> dict:
        cr, pr = c[rows], p[rows]
        out = {"random": no_curve(summarise(np.mean([accuracy_curve(np.random.default_rng(i).permutation(len(rows)),
                                                                    cr, pr) for i in range(200)], 0), cr, pr))}
        rng = np.random.default_rng(SEED)
        for name, s in {"length": length[rows], "oracle": oracle[rows], **scored}.items():
            out[name] = no_curve(summarise(accuracy_curve(order_by(s, rng), cr, pr), cr, pr))
        return {"cheap_accuracy": round(float(cr.mean()), 4), "premium_accuracy": round(float(pr.mean()), 4),
                "methods": out}

    split_scores, split_chose = kind_scores(labels, emb, train, test)
    oof, fold_chose = kinds_out_of_fold(labels, emb, folds)
    return {"split": {**table(test, split_scores), "chose": split_chose},
            "all_rows_5fold": {**table(np.arange(labels.height), oof), "chose": fold_chose}}


def ensemble_report(labels: pl.DataFrame, emb: np.ndarray, folds: np.ndarray) -> dict:
    """`routing_ensemble`'s candidates and ensembles on all rows, 5-fold (the same folds), the reference
    diagnostics, and each figure's bootstrap interval."""
    c, p = labels["cheap_ok"].to_numpy(), labels["premium_ok"].to_numpy()
    oof, chose = ensemble_out_of_fold(labels, emb, folds)
    oof.update(reference_difficulty(labels["prompt"].to_list(), REFERENCES))
    rng = np.random.default_rng(SEED)
    return {"methods": {k: no_curve(summarise(accuracy_curve(order_by(s, rng), c, p), c, p)) for k, s in oof.items()},
            "share_interval_90": bootstrap_shares(oof, c, p), "chose": chose}


def main() -> dict:
    df = pl.read_csv(DATA)
    prompts = df["prompt"].to_list()
    cheap_ok = df[CHEAP].to_numpy().astype(bool)
    premium_ok = df[PREMIUM].to_numpy().astype(bool)
    responses = df[f"{CHEAP}_response"].fill_null("").to_list()
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(df))
    n_train = int(0.7 * len(df))
    train, test = np.sort(perm[:n_train]), np.sort(perm[n_train:])

    emb = cached_embeddings("gsm8k_prompt_emb", prompts)

    labels = pl.DataFrame({"prompt": prompts, "cheap_ok": cheap_ok, "premium_ok": premium_ok})
    ct, pt = cheap_ok[test], premium_ok[test]
    report: dict = {
        "data": str(DATA.relative_to(ROOT.parent)), "rows": len(df), "train_rows": len(train), "test_rows": len(test),
        "seed": SEED, "cheap_accuracy_test": round(float(ct.mean()), 4),
        "premium_accuracy_test": round(float(pt.mean()), 4),
        "target_accuracy_test": round(float(0.95 * pt.mean()), 4), "methods": {},
    }
    methods = report["methods"]

    # baselines
    rand = np.mean([accuracy_curve(np.random.default_rng(i).permutation(len(test)), ct, pt) for i in range(200)], 0)
    methods["random"] = summarise(rand, ct, pt)
    length = np.array([len(p) for p in prompts], dtype=float)
    methods["length"] = summarise(accuracy_curve(order_by(length[test], rng), ct, pt), ct, pt)
    oracle = (pt & ~ct).astype(float) - (ct & ~pt).astype(float)
    methods["oracle"] = summarise(accuracy_curve(order_by(oracle, rng), ct, pt), ct, pt)

    # learned routers (prompt only): text features, and text + embedding
    # single logistic heads (text features; text + embedding), each target, L2 chosen by 5-fold CV on train rows
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    head_scores = {}
    for name, use_emb in (("router_text", False), ("router_text_embedding", True)):
        x = router_features(labels["prompt"], use_emb, emb if use_emb else None)
        for target in ("not cheap_ok", "not cheap_ok and premium_ok"):
            y = ((~cheap_ok & premium_ok) if "premium_ok" in target else ~cheap_ok).astype(float)
            l2, cv = cv_l2(x[train], y[train], cheap_ok[train], premium_ok[train], np.random.default_rng(SEED))
            mean, scale = x[train].mean(0), x[train].std(0)
            scale[scale < 1e-9] = 1
            w, b = fit_logistic((x[train] - mean) / scale, y[train], l2=l2)
            scores = sig(((x[test] - mean) / scale) @ w + b)
            key = name + ("" if "premium_ok" in target else "_cheap_label_only")
            head_scores[key] = scores
            methods[key] = {"target": target, "l2": l2, "cv_apgr_by_l2": cv,
                            **summarise(accuracy_curve(order_by(scores, rng), ct, pt), ct, pt)}
    # the product's router (`sluice router train`): both heads averaged, with the L2s chosen above
    router = train_router(labels[train.tolist()], use_embeddings=True, l2_text=methods["router_text"]["l2"],
                          l2_embedding=methods["router_text_embedding"]["l2"], embeddings=emb[train])
    scores = router.score(labels["prompt"][test.tolist()], emb[test])
    assert np.allclose(scores, (head_scores["router_text"] + head_scores["router_text_embedding"]) / 2)
    methods["router"] = {"target": router.target, "heads": "text + text_embedding, averaged",
                         **summarise(accuracy_curve(order_by(scores, rng), ct, pt), ct, pt)}
    split_kinds, split_chose = kind_scores(labels, emb, train, test)
    for name, s in split_kinds.items():
        methods[name] = {**({"chose": split_chose[name]} if name in split_chose else {}),
                         **summarise(accuracy_curve(order_by(s, rng), ct, pt), ct, pt)}

    # budget mode on the same test rows: two tiers at list prices, tokens estimated as the router plans them
    report["budget"] = budget_sweep(labels["prompt"][test.tolist()].to_list(), scores, ct, pt)

    # cascade: cheap tier answers first; a scorer over prompt + checks of the cheap answer picks what to redo
    xa = np.hstack([text_features(prompts), answer_signals(responses)])
    y = (~cheap_ok & premium_ok).astype(float)
    l2, cv = cv_l2(xa[train], y[train], cheap_ok[train], premium_ok[train], np.random.default_rng(SEED))
    mean, scale = xa[train].mean(0), xa[train].std(0)
    scale[scale < 1e-9] = 1
    w, b = fit_logistic((xa[train] - mean) / scale, y[train], l2=l2)
    s = ((xa[test] - mean) / scale) @ w + b
    methods["cascade_answer_checks"] = {
        "note": "every row is first answered by the cheap tier (one cheap call per row, plus the share shown)",
        "l2": l2, "cv_apgr_by_l2": cv, **summarise(accuracy_curve(order_by(s, rng), ct, pt), ct, pt)}

    # the same methods on all rows, 5-fold out-of-fold scores (baselines need no fitting)
    folds = np.random.default_rng(SEED + 1).permutation(len(df)) % 5
    target = (~cheap_ok & premium_ok).astype(float)
    designs = {
        "router_text": (router_features(labels["prompt"], False), methods["router_text"]["l2"]),
        "router_text_embedding": (router_features(labels["prompt"], True, emb), methods["router_text_embedding"]["l2"]),
        "cascade_answer_checks": (xa, methods["cascade_answer_checks"]["l2"]),
    }
    every = {
        "random": np.mean([accuracy_curve(np.random.default_rng(i).permutation(len(df)), cheap_ok, premium_ok)
                           for i in range(200)], 0),
        "length": accuracy_curve(order_by(length, rng), cheap_ok, premium_ok),
        "oracle": accuracy_curve(order_by((premium_ok & ~cheap_ok).astype(float) - (cheap_ok & ~premium_ok), rng),
                                 cheap_ok, premium_ok),
    }
    oofs = {}
    for name, (x, l2) in designs.items():
        oof = np.zeros(len(df))
        for k in range(5):
            tr, te = folds != k, folds == k
            mean, scale = x[tr].mean(0), x[tr].std(0)
            scale[scale < 1e-9] = 1
            w, b = fit_logistic((x[tr] - mean) / scale, target[tr], l2=l2)
            oof[te] = sig(((x[te] - mean) / scale) @ w + b)
        oofs[name] = oof
        every[name] = accuracy_curve(order_by(oof, rng), cheap_ok, premium_ok)
    every["router"] = accuracy_curve(order_by((oofs["router_text"] + oofs["router_text_embedding"]) / 2, rng),
                                     cheap_ok, premium_ok)
    kind_oof, fold_chose = kinds_out_of_fold(labels, emb, folds)
    for name, s in kind_oof.items():
        every[name] = accuracy_curve(order_by(s, rng), cheap_ok, premium_ok)
    report["all_rows_5fold"] = {
        "cheap_accuracy": round(float(cheap_ok.mean()), 4), "premium_accuracy": round(float(premium_ok.mean()), 4),
        "methods": {k: no_curve(summarise(v, cheap_ok, premium_ok)) for k, v in every.items()},
        "chose": fold_chose,
    }
    report["ensemble"] = ensemble_report(labels, emb, folds)
    report["graded"] = graded_report(graded_labels(df), emb, train, test, folds)

    # speed of the gatekeeper (per row, this machine)
    from sluice.stages.route.learned import load_router  # noqa: F401  (import cost not counted)
    reps = 5
    t0 = time.perf_counter()
    for _ in range(reps):
        text_features(prompts)
    text_us = (time.perf_counter() - t0) / reps / len(prompts) * 1e6
    t0 = time.perf_counter()
    for _ in range(reps):
        router.score(labels["prompt"], emb)
    score_us = (time.perf_counter() - t0) / reps / len(prompts) * 1e6
    from sluice.stages.review.cascade import answer_signals as _signals

    t0 = time.perf_counter()
    _signals(responses)
    answer_us = (time.perf_counter() - t0) / len(responses) * 1e6
    from models.embeddings import embed

    sample = prompts[:128]
    embed(sample[:8], max_length=EMBED_MAX_TOKENS)  # load the model outside the timing
    t0 = time.perf_counter()
    embed(sample, max_length=EMBED_MAX_TOKENS)
    emb_ms = (time.perf_counter() - t0) / len(sample) * 1e3
    report["brevity"] = brevity_on_sharegpt()
    report["speed"] = {
        "answer_signals_us_per_row": round(answer_us, 1),
        "text_features_us_per_row": round(text_us, 1),
        "router_scoring_us_per_row_given_embeddings": round(score_us, 1),
        "embedding_ms_per_row": round(emb_ms, 2),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, shared",
    }
    return report


if __name__ == "__main__":
    if "--markdown-only" in sys.argv:  # redraw the tables from the last results
        result = json.loads((OUT / "routing_quality.json").read_text())
    elif "--ensemble-only" in sys.argv:  # rerun only routing_ensemble's section into the last results
        result = json.loads((OUT / "routing_quality.json").read_text())
        frame = pl.read_csv(DATA)
        result["ensemble"] = ensemble_report(
            pl.DataFrame({"prompt": frame["prompt"], "cheap_ok": frame[CHEAP], "premium_ok": frame[PREMIUM]}),
            cached_embeddings("gsm8k_prompt_emb", frame["prompt"].to_list()),
            np.random.default_rng(SEED + 1).permutation(frame.height) % 5)
        (OUT / "routing_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    else:
        result = main()
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "routing_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "routing_quality.md").write_text(markdown(result))
    print(markdown(result))
