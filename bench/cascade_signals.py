"""Cascade signals on GSM8K: how well each confidence signal predicts a wrong answer, and what escalating by it buys.

Data: ../shared/data/routing/gsm8k_responses.csv (read by path): 1,319 GSM8K test questions with Mixtral-8x7B's and
GPT-4's recorded answers. The cheap tier is Mixtral, the next tier GPT-4. Right or wrong is the number grader's
verdict against the GSM8K references (../shared/data/prompts/gsm8k/test.jsonl), as `sluice run --grader number`
grades (RouteLLM's own labels miss answers such as "$6.00" for 6).

Signals, each scored 5-fold out of fold where it is learned (same folds for all):
    answer_checks   the review stage's verifier trained on answers alone: a logistic over `answer_signals`
                    (l2 = 10, as before issue 16's step checks)
    answer_and_question_checks
                    the verifier with the checks against the question too (`sluice.stages.review.checks`), l2 = 10:
                    what Sluice used for tiers without logprobs before the step checks
    answer_question_and_step_checks
                    the verifier as trained now: with the re-computed steps (`sluice.stages.review.steps`), its l2
                    chosen inside the training folds; what Sluice uses when the labels carry the prompts
    steps_and_router
                    the same checks plus the router's own score of the prompt, stacked (the router trained on the
                    training folds; on its own training rows its score is taken out of fold, nested, so the stack
                    does not learn to trust an overfitted score)
    router          the router's text features of the prompt (a logistic on the same target): what routing knows
                    before any answer exists
    both            prompt features and answer checks together
    length          the cheap answer's length (longer: less sure)
    random          no signal
Token logprobs and n-sample agreement need the model itself: the recorded answers have neither, so they are
measured on the live small tier when `--live N` is given (SmolLM2-135M on vLLM; GSM8K is beyond it, so on N
labelled Quora question pairs as a yes/no task).

For each signal: AUROC for "the cheap answer is wrong", the accuracy of the cascade that re-asks the next tier for
the least confident share f of rows, f in 0.1..0.5, with the gain per escalated row against random escalation, and
the share it must escalate to reach 95% of the next tier's accuracy.

    .venv/bin/python bench/cascade_signals.py               # writes bench/results/cascade_signals.{json,md}
    .venv/bin/python bench/cascade_signals.py --live 300    # and the live small tier's own signals (slow on CPU)
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sluice.contracts.grading import grade  # noqa: E402
from sluice.stages.review.cascade import ANSWER_SIGNALS, answer_signals  # noqa: E402
from sluice.stages.review.checks import QUESTION_SIGNALS, question_signals  # noqa: E402
from sluice.stages.review.steps import step_signals  # noqa: E402
from sluice.stages.review.verifier import choose_l2, train_verifier  # noqa: E402
from sluice.stages.route.features import text_features  # noqa: E402
from sluice.stages.route.learned import train_router  # noqa: E402
from sluice.stats import auroc, fit_logistic  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "routing" / "gsm8k_responses.csv"
TEST = ROOT.parent / "shared" / "data" / "prompts" / "gsm8k" / "test.jsonl"
OUT = ROOT / "bench" / "results"
CHEAP, PREMIUM = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
SEED = 20261204
SHARES = [0.1, 0.2, 0.3, 0.35, 0.4, 0.5]


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: np.ndarray, l2: float = 10.0, only: int | None = None
                ) -> np.ndarray:
    """P(wrong) (as a logit) for every row from a logistic fitted on the other folds (`only`: for that fold alone)."""
    s = np.zeros(len(y))
    for k in ([only] if only is not None else range(folds.max() + 1)):
        tr, te = folds != k, folds == k
        mean, scale = x[tr].mean(0), x[tr].std(0)
        scale[scale < 1e-9] = 1.0
        w, b = fit_logistic((x[tr] - mean) / scale, y[tr].astype(float), l2=l2)
        s[te] = ((x[te] - mean) / scale) @ w + b
    return s


def share_for_95pct(p_wrong: np.ndarray, cheap_ok: np.ndarray, next_ok: np.ndarray) -> float | None:
    """The least share of rows (highest p_wrong first) the next tier must answer for 95% of its own accuracy."""
    order = np.lexsort((np.arange(len(p_wrong)), -p_wrong))
    acc = (cheap_ok.sum() + np.concatenate([[0.0], np.cumsum(next_ok[order].astype(float) - cheap_ok[order])]))
    reach = np.nonzero(acc / len(p_wrong) >= 0.95 * next_ok.mean() - 1e-12)[0]
    return round(float(reach[0] / len(p_wrong)), 4) if len(reach) else None


def router_stacked(x: np.ndarray, prompts: list, cheap_ok: np.ndarray, next_ok: np.ndarray,
                   folds: np.ndarray) -> np.ndarray:
    """P(wrong) from the answer checks `x` plus logit(router score), stacked without leaks: per outer fold the
    router is trained on the training folds to score the test rows, and its training rows get scores from routers
    trained on the other inner folds; the logistic's l2 is chosen inside the training folds."""
    labels = pl.DataFrame({"prompt": prompts, "cheap_ok": cheap_ok, "premium_ok": next_ok})
    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
    s = np.zeros(len(prompts))
    for k in range(folds.max() + 1):
        tr, te = np.nonzero(folds != k)[0], np.nonzero(folds == k)[0]
        inner, r_tr = np.arange(len(tr)) % 5, np.zeros(len(tr))
        for j in range(5):
            r = train_router(labels[tr[inner != j].tolist()], use_embeddings=False, l2_text=10.0)
            r_tr[inner == j] = r.score(labels[tr[inner == j].tolist()]["prompt"])
        r_te = train_router(labels[tr.tolist()], use_embeddings=False, l2_text=10.0).score(labels[te.tolist()]["prompt"])
        xtr, xte = np.hstack([x[tr], logit(r_tr)[:, None]]), np.hstack([x[te], logit(r_te)[:, None]])
        s[te] = out_of_fold(np.vstack([xtr, xte]), np.concatenate([~cheap_ok[tr], ~cheap_ok[te]]),
                            np.concatenate([np.zeros(len(tr), int), np.ones(len(te), int)]),
                            l2=choose_l2(xtr, ~cheap_ok[tr]), only=1)[len(tr):]
    return s


def cascade_accuracy(p_wrong: np.ndarray, cheap_ok: np.ndarray, next_ok: np.ndarray, share: float) -> float:
    """Accuracy when the `share` of rows with the highest p_wrong are answered again by the next tier."""
    k = int(round(share * len(p_wrong)))
    redo = np.zeros(len(p_wrong), bool)
    redo[np.lexsort((np.arange(len(p_wrong)), -p_wrong))[:k]] = True
    return float(np.where(redo, next_ok, cheap_ok).mean())


def main() -> dict:
    df = pl.read_csv(DATA)
    refs = {}
    for line in TEST.read_text().splitlines():
        t = json.loads(line)
        refs[t["question"]] = t["answer"].split("####")[-1].strip()
    answers = df[f"{CHEAP}_response"].to_list()
    prompts = df["prompt"].to_list()
    cheap_ok = np.array([grade(a, refs[p], "number")[0] is True for p, a in zip(prompts, answers)])
    next_ok = np.array([grade(a, refs[p], "number")[0] is True
                        for p, a in zip(prompts, df[f"{PREMIUM}_response"].to_list())])
    wrong = ~cheap_ok
    folds = np.random.default_rng(SEED).permutation(len(df)) % 5
    t0 = time.perf_counter()
    xa = answer_signals(answers)
    checks_s = (time.perf_counter() - t0) / len(df)
    t0 = time.perf_counter()
    xall = np.hstack([xa, question_signals(prompts, answers), step_signals(prompts, answers)])
    all_checks_s = checks_s + (time.perf_counter() - t0) / len(df)
    xt = text_features(df["prompt"])
    verifier_oof, question_oof, steps_oof = np.zeros(len(df)), np.zeros(len(df)), np.zeros(len(df))
    chosen = []
    for k in range(5):  # the product's own training function, fold by fold
        tr, te = folds != k, folds == k
        pick = lambda xs, m: [x for x, t in zip(xs, m) if t]  # noqa: E731
        v = train_verifier(pick(answers, tr), cheap_ok[tr].tolist(), l2=10.0, signals=ANSWER_SIGNALS)
        verifier_oof[te] = v.p_wrong(pick(answers, te))
        v = train_verifier(pick(answers, tr), cheap_ok[tr].tolist(), l2=10.0, prompts=pick(prompts, tr),
                           signals=ANSWER_SIGNALS + QUESTION_SIGNALS)
        question_oof[te] = v.p_wrong(pick(answers, te), pick(prompts, te))
        v = train_verifier(pick(answers, tr), cheap_ok[tr].tolist(), prompts=pick(prompts, tr))
        steps_oof[te] = v.p_wrong(pick(answers, te), pick(prompts, te))
        chosen.append(v.l2)
    rng = np.random.default_rng(SEED)
    signals = {
        "answer_checks": verifier_oof,
        "answer_and_question_checks": question_oof,
        "answer_question_and_step_checks": steps_oof,
        "steps_and_router": router_stacked(xall, prompts, cheap_ok, next_ok, folds),
        "router": out_of_fold(xt, wrong, folds),
        "both": out_of_fold(np.hstack([xt, xa]), wrong, folds),
        "length": np.array([len(a or "") for a in answers], dtype=float),
        "random": rng.random(len(df)),
    }
    base = float(cheap_ok.mean())
    table = {}
    for name, s in signals.items():
        accs = {f"{f:.2f}": round(cascade_accuracy(s, cheap_ok, next_ok, f), 4) for f in SHARES}
        table[name] = {"auroc_wrong": round(auroc(s, wrong), 4), "accuracy_by_share": accs,
                       "share_for_95pct": share_for_95pct(s, cheap_ok, next_ok)}
    for name in signals:
        rand = table["random"]["accuracy_by_share"]
        table[name]["gain_per_escalated_row_vs_random"] = {
            f: round((table[name]["accuracy_by_share"][f] - base) / max(rand[f] - base, 1e-9), 2) for f in rand}
    return {
        "data": str(DATA.relative_to(ROOT.parent)), "rows": len(df), "cheap": CHEAP, "next": PREMIUM,
        "cheap_accuracy": round(base, 4), "next_accuracy": round(float(next_ok.mean()), 4),
        "target_95pct_of_next": round(0.95 * float(next_ok.mean()), 4), "signals": table,
        "answer_checks_us_per_row": round(checks_s * 1e6, 1),
        "all_checks_us_per_row": round(all_checks_s * 1e6, 1), "l2_chosen_per_fold": chosen,
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }


QQP = ROOT.parent / "shared" / "data" / "pairs" / "qqp_dev.tsv"
YES_NO = json.dumps({"enum": ["yes", "no"]})


def live_small_tier(n: int, samples: int = 4) -> dict:
    """The live small tier (SmolLM2-135M on vLLM, the default catalogue's `small`, logprobs on) on a task it can
    sometimes do: n Quora question pairs (QQP dev, labelled), "do these ask the same thing? yes or no", decoded
    under a yes/no choice list. Signals for a wrong answer: 1 - exp(mean token logprob) of the greedy answer, and
    1 - the share of `samples` answers sampled at temperature 0.7 that agree with it."""
    from models.backends import Request, make_backend, release_engines
    from models.catalogue import load_catalogue

    pairs = pl.read_csv(QQP, separator="\t", has_header=False, quote_char=None,
                        new_columns=["id", "qid1", "qid2", "q1", "q2", "label"]).drop_nulls()
    pairs = pairs.sample(n=min(n, pairs.height), seed=SEED, shuffle=True)
    prompts = [f"Question 1: {a}\nQuestion 2: {b}\nDo these two questions ask the same thing? Answer yes or no."
               for a, b in zip(pairs["q1"], pairs["q2"])]
    labels = ["yes" if int(v) == 1 else "no" for v in pairs["label"]]
    tier = load_catalogue().tier("small")
    backend = make_backend(tier)
    t0 = time.perf_counter()
    try:
        greedy = backend.complete([Request(f"g{i}", p, None, 4, response_schema=YES_NO)
                                   for i, p in enumerate(prompts)]).completions
        sampled = backend.complete([Request(f"s{i}-{k}", p, None, 4, temperature=0.7, response_schema=YES_NO)
                                    for i, p in enumerate(prompts) for k in range(samples)]).completions
    finally:
        backend.close()
        release_engines()
    seconds = time.perf_counter() - t0
    answers = [(c.text or "").strip().lower() for c in greedy]
    wrong = np.array([a != y for a, y in zip(answers, labels)])
    by_row: dict[int, list[str]] = {}
    for c in sampled:
        by_row.setdefault(int(c.row_id[1:].split("-")[0]), []).append((c.text or "").strip().lower())
    agreement = np.array([np.mean([s == a for s in by_row.get(i, [])]) if by_row.get(i) else 0.0
                         for i, a in enumerate(answers)])
    logprob = np.array([c.mean_logprob if c.mean_logprob is not None else -10.0 for c in greedy])
    return {"task": "QQP dev pairs, yes/no under a choice list", "rows": len(prompts), "samples": samples,
            "accuracy": round(float((~wrong).mean()), 4), "answered_yes": round(float(np.mean([a == "yes" for a in answers])), 4),
            "auroc_wrong": {"mean_logprob": round(auroc(-logprob, wrong), 4),
                            "sample_agreement": round(auroc(-agreement, wrong), 4),
                            "random": round(auroc(np.random.default_rng(SEED).random(len(wrong)), wrong), 4)},
            "seconds": round(seconds, 1)}


def markdown(r: dict) -> str:
    lines = [f"# Cascade signals on GSM8K ({r['rows']} questions; cheap Mixtral-8x7B, next GPT-4)", "",
             "`bench/cascade_signals.py`, recorded answers (`shared/data/routing/gsm8k_responses.csv`), 5-fold out of "
             f"fold. Cheap accuracy {r['cheap_accuracy']}, next-tier accuracy {r['next_accuracy']} (95%: "
             f"{r['target_95pct_of_next']}).", "",
             "AUROC: how well the signal ranks wrong cheap answers above right ones (0.5 = chance). Accuracy: the "
             "cascade that re-asks the next tier for the least confident share of rows. Gain: accuracy bought over "
             "the cheap tier, as a multiple of what escalating the same number of random rows buys.", "",
             "| signal | AUROC (wrong) | " + " | ".join(f"acc @ {f}" for f in r["signals"]["random"]["accuracy_by_share"])
             + " | gain vs random @ 0.35 | share for 95% |",
             "|---|---|" + "---|" * len(r["signals"]["random"]["accuracy_by_share"]) + "---|---|"]
    for name, s in r["signals"].items():
        lines.append(f"| {name} | {s['auroc_wrong']} | " + " | ".join(str(v) for v in s["accuracy_by_share"].values())
                     + f" | {s['gain_per_escalated_row_vs_random']['0.35']} | {s.get('share_for_95pct')} |")
    if r.get("live"):
        v = r["live"]
        lines += ["", f"## The live small tier (SmolLM2-135M on vLLM, CPU): {v['task']}", "",
                  "GSM8K is out of its reach (it answered 0 of 3 demo questions right), so its own signals are "
                  f"measured on {v['rows']} labelled Quora question pairs: accuracy {v['accuracy']} (answered yes "
                  f"{v['answered_yes']}), {v['samples']} samples at temperature 0.7 per row, {v['seconds']} s.", "",
                  "| signal | AUROC (wrong) |", "|---|---|"]
        lines += [f"| {k} | {x} |" for k, x in v["auroc_wrong"].items()]
    lines += ["", f"Answer checks cost {r['answer_checks_us_per_row']} µs a row, all checks (answer, question, "
              f"steps) {r.get('all_checks_us_per_row')} µs ({r['machine']}). The verifier's l2, chosen inside each "
              f"outer fold's training rows: {r.get('l2_chosen_per_fold')}.", "",
              "Issue 16's step checks (`sluice.stages.review.steps`: every `expression = value` re-computed, with "
              "dollars, units, percentages, words and chains; the final answer against the last step; a cut-off "
              "answer; the work done for the question's size) lift the verifier from the answer-and-question row to "
              "the answer-question-and-step row above. The router's own score stacked on top "
              "(`steps_and_router`) adds nothing measurable, so it is not wired in: the cascade's verifier reads "
              "the answer and its question only. The checks were designed by reading Mixtral's answers on these "
              "same questions (their weights and l2 are fitted out of fold, the choice of checks is not), so the "
              "lift may be a little optimistic for other data.", "",
              "Wired: tiers that report token logprobs (vLLM; OpenAI-compatible APIs that return them) escalate on "
              "exp(mean logprob); tiers that do not (Anthropic, replayed answers) on the answer checks, when a "
              "verifier is trained (`sluice router train` with `cheap_response` in the labels; with the prompts "
              "too, the answer, question and step checks).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    if "--markdown-only" not in sys.argv:
        result = main()
        if "--live" in sys.argv:  # needs the converted SmolLM2 (data/models, made by `sluice prepare` / make demo)
            result["live"] = live_small_tier(int(sys.argv[sys.argv.index("--live") + 1]))
        elif (OUT / "cascade_signals.json").is_file():  # keep the last live measurement (an engine run is slow)
            result["live"] = json.loads((OUT / "cascade_signals.json").read_text()).get("live")
        (OUT / "cascade_signals.json").write_text(json.dumps(result, indent=2) + "\n")
    result = json.loads((OUT / "cascade_signals.json").read_text())
    (OUT / "cascade_signals.md").write_text(markdown(result))
    print(markdown(result))
