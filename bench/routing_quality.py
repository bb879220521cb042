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

    .venv/bin/python bench/routing_quality.py    # writes bench/results/routing_quality.{json,md}
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
SHAREGPT = ROOT.parent / "shared" / "data" / "prompts" / "sharegpt_first_turns_dev.jsonl.gz"
REFERENCES = ROOT.parent / "shared" / "data" / "prompts" / "gsm8k" / "test.jsonl"
KINDS = {"router_product": "logistic", "knn": "knn", "per_tier": "per-tier", "auto": "auto"}
SEED = 20260124
CHEAP, PREMIUM = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
L2_GRID = [1.0, 10.0, 100.0, 1000.0, 3000.0, 10000.0, 30000.0]
CURVE = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)]


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


# USD per 1M tokens (input, output): Mixtral-8x7B-Instruct at a typical hosted price; gpt-4-1106-preview list price
PRICES = {"cheap": (0.60, 0.60), "premium": (10.0, 30.0)}


def budget_sweep(prompts: list[str], scores: np.ndarray, cheap_ok: np.ndarray, premium_ok: np.ndarray) -> dict:
    """`sluice.stages.route.policies.route_by_budget` on the test rows: accuracy and spend for budgets between all-cheap and
    all-premium (planned with the router's scores, 8 + chars/4 input tokens and 256 output tokens a row)."""
    from models.pricing import TierPrice
    from sluice.stages.route.policies import estimate_input_tokens, expected_quality, route_by_budget, row_tier_costs

    prices = [TierPrice(k, i / 1e6, o / 1e6, "list") for k, (i, o) in PRICES.items()]
    costs = row_tier_costs(estimate_input_tokens(prompts), np.full(len(prompts), 256.0), prices)
    low, high = costs[:, 0].sum(), costs[:, 1].sum()
    rows = []
    for frac in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        budget = low + frac * (high - low)
        plan = route_by_budget(costs, expected_quality(scores, 2), budget)
        acc = float(np.where(plan.tier == 1, premium_ok, cheap_ok).mean())
        rows.append({"budget_usd": round(budget, 4), "share_of_premium_cost": round(budget / high, 3),
                     "planned_usd": round(plan.planned_usd, 4), "premium_share": round(float((plan.tier == 1).mean()), 3),
                     "accuracy": round(acc, 4)})
    return {"prices_usd_per_1m": PRICES, "all_cheap_usd": round(low, 4), "all_premium_usd": round(high, 4),
            "sweep": rows}


def brevity_on_sharegpt() -> dict:
    """Tokens `sluice.stages.route.brevity` trims from 8,700 real first user turns (ShareGPT), and the max_tokens caps it sets."""
    from models.tokens import count_word_pieces as estimate_tokens
    from sluice.stages.route.brevity import apply_brevity

    rows = pl.read_ndjson(SHAREGPT).select("prompt")
    count, how = estimate_tokens, "word-piece estimate (models.tokens.count_word_pieces)"
    tok_file = ROOT / "data" / "models" / "smollm2-135m-instruct" / "tokenizer.json"
    if tok_file.exists():  # the demo model's BPE tokenizer (made by `sluice prepare`): exact counts
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tok_file))
        count, how = (lambda t: len(tok.encode(t, add_special_tokens=False).ids)), "SmolLM2 BPE tokenizer"
    t0 = time.perf_counter()
    out, rep = apply_brevity(rows.with_columns(pl.lit(None, pl.Int32).alias("max_tokens")), count_tokens=count)
    seconds = time.perf_counter() - t0
    _, rep_opt = apply_brevity(rows, count_tokens=count, cap_max_tokens=False, drop_repeated_lines=True)
    caps = out["max_tokens"].value_counts().sort("max_tokens")
    return {
        "data": str(SHAREGPT.relative_to(ROOT.parent)), "rows": rep.rows, "rows_trimmed": rep.rows_trimmed,
        "tokens_before": rep.tokens_before, "tokens_after": rep.tokens_after, "tokens_saved": rep.tokens_saved,
        "saved_pct": round(100 * rep.tokens_saved / max(rep.tokens_before, 1), 2),
        "max_tokens_caps": {str(k): v for k, v in caps.iter_rows()},
        "rows_capped_below_default_256": rep.rows_capped, "max_output_tokens_saved": rep.max_output_tokens_saved,
        "us_per_row_including_token_counting": round(seconds / rep.rows * 1e6, 1),
        "token_count": how,
        "with_drop_repeated_lines": {"rows_trimmed": rep_opt.rows_trimmed, "tokens_saved": rep_opt.tokens_saved},
    }


PROMPT_ONLY = ("length", "router_text", "router_text_embedding", "router", "router_product", "knn", "per_tier", "auto")
TARGET_SHARE = 0.50  # issue 17: premium share for 95% of all-premium accuracy, 5-fold on all rows


def best_prompt_only(methods: dict) -> tuple[str, float]:
    shares = {k: v["share_for_95pct_of_premium_accuracy"] for k, v in methods.items()
              if k in PROMPT_ONLY and v["share_for_95pct_of_premium_accuracy"] is not None}
    best = min(shares, key=lambda k: shares[k])
    return best, shares[best]


def kinds_markdown(r: dict) -> list[str]:
    a, g = r["all_rows_5fold"], r["graded"]
    lines = ["", "## Router kinds and the acceptance figure", ""]
    for name, methods in (("RouteLLM's labels", a["methods"]),
                          ("graded labels", g["all_rows_5fold"]["methods"])):
        best, share = best_prompt_only(methods)
        verdict = "meets" if share <= TARGET_SHARE else "does not meet"
        shares = ", ".join(f"{k} {methods[k]['share_for_95pct_of_premium_accuracy']}" for k in
                           ("knn", "per_tier", "auto", "router_product", "router", "cascade_answer_checks")
                           if k in methods)
        lines.append(f"- {name}, all {r['rows']} rows 5-fold: the best prompt-only router is **{best} at {share}** "
                     f"premium share for 95% of all-premium accuracy, which {verdict} the target of "
                     f"{TARGET_SHARE} ({shares}).")
    m, am = r["methods"], a["methods"]
    best, share = best_prompt_only(am)
    fig = lambda ms, k: ms[k]["share_for_95pct_of_premium_accuracy"]  # noqa: E731
    lines += [
        "",
        f"{'No' if share > TARGET_SHARE else 'A'} router that reads only the prompt reaches {TARGET_SHARE} on "
        f"all rows (best: {best}, {share}; target 0.50). Which GSM8K questions Mixtral gets wrong is mostly not "
        f"visible in the question: the oracle needs {fig(am, 'oracle')} premium share, while the prompt-only "
        f"routers' APGR stays between {min(am[k]['apgr'] for k in PROMPT_ONLY if k in am)} and "
        f"{max(am[k]['apgr'] for k in PROMPT_ONLY if k in am)} (random: 0.5). kNN over MiniLM embeddings "
        f"(neighbours by topic and wording, not by the arithmetic that trips the cheap model) lands with the "
        f"logistic heads, not above them: {fig(am, 'knn')} on all rows. On the 396-row split knn shows "
        f"{fig(m, 'knn')} and the logistic router {fig(m, 'router')}, under 0.50, but one test row is 0.25 "
        f"points there and the same methods need {fig(am, 'knn')} and {fig(am, 'router')} on all rows. Auto "
        "picks logistic or per-tier, within 0.01 APGR of each other on every training set (knn 0.001 to 0.05 "
        "below them), so its choice moves with the folds and its figure stays with theirs. The strong signal is the cheap tier's "
        f"answer: the cascade's answer checks need {fig(am, 'cascade_answer_checks')} (on top of one cheap "
        "call per row). Prompt-only routing is a first cut before any answer exists; the saving at a quality bar "
        "comes from the cascade.",
        "",
        "`router` (L2 by cross-validation on the split's training rows, which overlap the 5-fold test folds) and "
        "`router_product` (the shipped defaults, chosen the same way earlier) are the same logistic router; "
        "knn, per_tier and auto choose every setting inside their training rows only.",
        "",
        "What the chooser picked on each training set (auto: out-of-fold APGR of every candidate on the training "
        "rows; the kNN's k / weighting / text weight by its own cross-validation):", "",
        "| labels | rows trained on | auto chose | candidates (APGR) | knn chose |", "|---|---|---|---|---|"]
    m = r["methods"]
    rows = [("csv, split", f"{r['train_rows']} training rows", m["auto"]["chose"], m["knn"]["chose"]),
            ("graded, split", f"{r['train_rows']} training rows", g["split"]["chose"]["auto"],
             g["split"]["chose"]["knn"])]
    for name, folds in (("csv, 5-fold", a["chose"]), ("graded, 5-fold", g["all_rows_5fold"]["chose"])):
        rows += [(name, f"the 4 folds other than fold {i}", c["auto"], c["knn"]) for i, c in enumerate(folds)]
    for name, trained, auto, knn in rows:
        candidates = ", ".join(f"{k} {v}" for k, v in auto["candidates"].items())
        lines.append(f"| {name} | {trained} | {auto['chosen']} | {candidates} | k={knn['k']}, {knn['weighting']}, "
                     f"text weight {knn['text_weight']} |")
    for name, part, rows in (("Graded labels, split", "split", f"{r['test_rows']} test rows"),
                             ("Graded labels, all rows 5-fold", "all_rows_5fold", f"all {r['rows']} rows")):
        t = g[part]
        lines += ["", f"### {name} ({rows}; cheap {t['cheap_accuracy']}, premium {t['premium_accuracy']})", "",
                  "| method | APGR | premium share for 95% of premium accuracy | share for 95% of the gap |",
                  "|---|---|---|---|"]
        for k, v in t["methods"].items():
            lines.append(f"| {k} | {v['apgr']} | {v['share_for_95pct_of_premium_accuracy']} | "
                         f"{v['share_for_95pct_gap_recovered']} |")
    return lines


def markdown(r: dict) -> str:
    m = r["methods"]
    lines = [
        "# Routing quality on GSM8K (Mixtral-8x7B cheap, GPT-4 premium)", "",
        f"`bench/routing_quality.py`, data `{r['data']}`, seed {r['seed']}: {r['train_rows']} train rows, "
        f"{r['test_rows']} test rows. Test accuracy: cheap {r['cheap_accuracy_test']}, premium "
        f"{r['premium_accuracy_test']}; 95% of all-premium = {r['target_accuracy_test']}.", "",
        "Labels: every table down to \"Router kinds\" uses RouteLLM's correctness columns from the csv; the \"Graded "
        "labels\" tables grade both recorded answers as `sluice run --grader number` does (against "
        "../shared/data/prompts/gsm8k/test.jsonl), which also counts answers like \"$6.00\" that RouteLLM's labels "
        f"miss (premium accuracy {r['graded']['all_rows_5fold']['premium_accuracy']} graded, "
        f"{r['all_rows_5fold']['premium_accuracy']} in the csv).", "",
        "| method | APGR | premium share for 95% of premium accuracy | share for 95% of the gap (RouteLLM CPT) |",
        "|---|---|---|---|",
    ]
    for k, v in m.items():
        lines.append(f"| {k} | {v['apgr']} | {v['share_for_95pct_of_premium_accuracy']} | "
                     f"{v['share_for_95pct_gap_recovered']} |")
    a = r["all_rows_5fold"]
    lines += ["", f"All {r['rows']} rows, 5-fold out-of-fold scores (cheap {a['cheap_accuracy']}, premium "
              f"{a['premium_accuracy']}):", "",
              "| method | APGR | premium share for 95% of premium accuracy | share for 95% of the gap |", "|---|---|---|---|"]
    for k, v in a["methods"].items():
        lines.append(f"| {k} | {v['apgr']} | {v['share_for_95pct_of_premium_accuracy']} | "
                     f"{v['share_for_95pct_gap_recovered']} |")
    lines += kinds_markdown(r)
    lines += ["", "## Accuracy against premium share (test rows)", "",
              "| share | " + " | ".join(m) + " |", "|---" * (len(m) + 1) + "|"]
    for f in CURVE:
        lines.append(f"| {f:.2f} | " + " | ".join(str(v["curve"][f"{f:.2f}"]) for v in m.values()) + " |")
    bu = r["budget"]
    lines += ["", "## Budget mode (`route_by_budget`) on the test rows", "",
              f"Prices (USD per 1M tokens in/out): cheap {bu['prices_usd_per_1m']['cheap']}, premium "
              f"{bu['prices_usd_per_1m']['premium']}; planned all-cheap ${bu['all_cheap_usd']}, all-premium "
              f"${bu['all_premium_usd']}. The budget is filled with the rows whose escalation buys the most expected "
              "quality per dollar (router scores).", "",
              "| budget (USD) | share of all-premium cost | planned (USD) | premium share | accuracy |", "|---|---|---|---|---|"]
    for x in bu["sweep"]:
        lines.append(f"| {x['budget_usd']} | {x['share_of_premium_cost']} | {x['planned_usd']} | {x['premium_share']} | "
                     f"{x['accuracy']} |")
    b = r["brevity"]
    lines += ["", "## Prompt brevity (`sluice.stages.route.brevity`) on real prompts", "",
              f"{b['rows']} ShareGPT first user turns (`{b['data']}`): {b['rows_trimmed']} rows trimmed, "
              f"{b['tokens_before']:,} -> {b['tokens_after']:,} tokens ({b['tokens_saved']:,} saved, "
              f"{b['saved_pct']}%; counted with the {b['token_count']}), {b['us_per_row_including_token_counting']} "
              f"µs/row including the counting. The opt-in `drop_repeated_lines` would trim "
              f"{b['with_drop_repeated_lines']['rows_trimmed']} rows and save "
              f"{b['with_drop_repeated_lines']['tokens_saved']:,} tokens, but repeated lines in real prompts are "
              f"mostly content (code, lists, lyrics), so it is off by default. max_tokens caps set by intent for "
              f"rows without one (cap: rows): {', '.join(f'{k}: {v}' for k, v in b['max_tokens_caps'].items())}; "
              f"{b['rows_capped_below_default_256']} rows capped below the default 256, taking "
              f"{b['max_output_tokens_saved']:,} output tokens off the batch's worst case."]
    s = r["speed"]
    lines += ["", "## Speed", "",
              f"- text features (length, intent, numbers, rigour): {s['text_features_us_per_row']} µs/row",
              f"- router scoring given embeddings: {s['router_scoring_us_per_row_given_embeddings']} µs/row",
              f"- MiniLM embedding (batches of 128, max 256 tokens): {s['embedding_ms_per_row']} ms/row "
              f"({s['machine']})",
              f"- cheap-answer checks (cascade scorer): {s['answer_signals_us_per_row']} µs/row", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--markdown-only" in sys.argv:  # redraw the tables from the last results
        result = json.loads((OUT / "routing_quality.json").read_text())
    else:
        result = main()
        OUT.mkdir(parents=True, exist_ok=True)
        (OUT / "routing_quality.json").write_text(json.dumps(result, indent=2) + "\n")
    (OUT / "routing_quality.md").write_text(markdown(result))
    print(markdown(result))
