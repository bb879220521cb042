"""The markdown page of bench/dedup_quality.py (bench/results/dedup_quality.md), from its results dict."""

from __future__ import annotations

RECALL_LEVELS = (0.05, 0.10, 0.15, 0.20, 0.25, 0.33, 0.40)


def _row(name, m):
    return (f"| {name} | {m['pairs']} | {m['positives']} | {m['hits']} | {m['precision']} | {m['recall']} | "
            f"{m['false_hit_rate']} |")


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        "# Dedup quality (bench/dedup_quality.py)", "",
        f"Fixed settings (the table right below; a run chooses its rule for `--max-false-hit` instead, next section): "
        f"near Jaccard >= {s['near_threshold']} on word {s['shingle_words']}-grams, character "
        f"{s.get('char_shingle', '?')}-grams for prompts of <= {s.get('char_max_words', '?')} words "
        f"({s['num_perm']} permutations, LSH bands x rows {s['lsh_bands_rows']}); semantic cosine >= "
        f"{s['semantic_threshold']} on prompts of <= {s['semantic_max_words']} words ({s['embedding']}); "
        "content guards on every near/semantic hit.", "",
        f"Split: {r['split']}. Thresholds were chosen on the tuning part only.", "",
        ("Every pair of each set (`--full`): " + str(r["population"]) if all(
            r["pairs_drawn"].get(k, 0) >= n for k, n in r["population"].items()) else
         f"Pairs drawn at random (fixed seeds) from each set: {r['pairs_drawn']} out of {r['population']} "
         "(`--full` runs them all: about 6 minutes on 2 quiet cores)") + ".", "",
        "| pair set | pairs | positives | hits | precision | recall | false-hit rate |", "|---|---|---|---|---|---|---|",
    ]
    lines += [_row(k, m) for k, m in r["defaults"].items()]
    if "per_delta" in r:
        names = list(r["per_delta"][0]["sets"])
        lines += ["", "## `--max-false-hit` (delta): the rule chosen on the shipped calibration set "
                  "(data/samples/dedup_calibration.csv.gz: QQP tuning part, MRPC train, STS-B train, swaps and edits "
                  "of those; no team verdicts), measured on the report sets", "",
                  "False-hit rate = false hits / labelled non-duplicate pairs (per pair of look-alike prompts, not "
                  "per reused answer: 1 - precision is the share of hits labelled non-duplicate). Cells: false-hit "
                  "rate / recall / precision; a false-hit rate over delta is marked **over**. Pair score: the "
                  "learned score a run uses (`sluice/stages/dedup/pair_score.py`: a logistic model over MiniLM "
                  "cosine, text overlap measures, question words and the template / qualifier guards as features; "
                  "numbers, negation, polarity, names and word order stay hard vetoes), fitted on a third of the "
                  "shipped pairs (`fit`), its threshold chosen on the other two thirds (`labels` - `fit`). Cosine "
                  "(previous rule): a MiniLM cosine threshold with every guard a veto, chosen on all shipped pairs; "
                  "the baseline, measured in the same run.", "",
                  "| delta | kind | buckets (words) | rule | bound | labels (fit) | " + " | ".join(names) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(names)]
        for row in r["per_delta"]:
            cells = []
            for name in names:
                m = row["sets"][name]
                cells.append(f"{m['false_hit_rate']}{'' if m['within_delta'] else ' **over**'} / {m['recall']} / "
                             f"{m['precision']}")
            lines.append(f"| {row['delta']} | {row.get('kind', 'cosine')} | {row['edges']} | {row['rule']} | "
                         f"{row['bound']} | {row['labels']} ({row.get('fit_labels', 0)}) | " + " | ".join(cells) + " |")
        scorer = next((row["scorer"] for row in r["per_delta"] if row.get("scorer")), None)
        if scorer:
            lines += ["", f"The pair score's weights (standardised features; fitted on {scorer['fitted_on']} candidate "
                      "pairs of the fit part): " + ", ".join(f"{f} {w:+.2f}" for f, w in
                                                             zip(scorer["features"], scorer["weights"]))
                      + f"; bias {scorer['bias']:+.2f}; pairs under MiniLM cosine {scorer['min_cosine']} are not "
                      "scored."]
        ceiling = r["per_delta"][0].get("qqp_report_best_rate_at_recall_0.18")
        if ceiling:
            lines += ["", "Ceiling at the target (recall 0.18 on the QQP report part): the lowest false-hit rate any "
                      "threshold reaches there, the threshold chosen on the report part itself (no rule a run can "
                      "choose does better): " + "; ".join(f"{k}: {v}" for k, v in ceiling.items()) + "."]
        lines += ["", "Richer pair-score features (IDF-weighted overlap, edit distances, MiniLM similarity of the words "
                  "on one side only, question words, cosine interactions, the named-entity guard as a feature), each "
                  "fitted and calibrated on the shipped pairs only: bench/results/dedup_quality.features.md "
                  "(bench/dedup_quality_features.py), with in-sample oracles on the report part."]
    lines += ["", f"Semantic candidates: static vectors distilled from MiniLM must reach cosine >= "
              f"{s['candidate_threshold']} before MiniLM decides. Pairs with MiniLM cosine >= {s['semantic_threshold']} "
              "that the static pass does not propose: " + "; ".join(
                  f"{k}: {v['not_proposed']} of {v['minilm_above_threshold']} ({v['not_proposed_positives']} labelled "
                  "duplicates)" for k, v in r["static_pass_losses"].items()) + "."]
    lines += ["", "Anchors, measured in the same run (static MiniLM cosine, no guards):", "",
              "| anchor | pairs | positives | hits | precision | recall | false-hit rate |", "|---|---|---|---|---|---|---|"]
    lines += [_row(k, m) for k, m in r["anchors_static_cosine_no_guards"].items()]
    lines += ["", "Tuning sweep (QQP tuning part, guards on, near stage at its default):", "",
              "| semantic threshold | pairs | positives | hits | precision | recall | false-hit rate |",
              "|---|---|---|---|---|---|---|"]
    lines += [_row(k, m) for k, m in r["tuning_sweep_semantic_threshold_qqp_tune"].items()]
    if "ranking_ceiling" in r:
        lines += ["", "Ranking ceiling: precision at the top of each ranking, at each recall (the best any threshold on "
                  "that score can do; pairs a guard vetoes rank last). The learned row is a logistic regression on "
                  "MiniLM features (cosine, u*v, |u-v|, static cosine, each guard's verdict), out-of-fold over 5 "
                  "folds of the tuning part.", "",
                  "| part | ranking | " + " | ".join(f"r={x:.2f}" for x in RECALL_LEVELS) + " |",
                  "|---|---|" + "---|" * len(RECALL_LEVELS)]
        for part, rankings in r["ranking_ceiling"].items():
            for name, at in rankings.items():
                if name == "top_non_duplicates_no_guard":
                    continue
                lines.append(f"| {part} | {name} | " + " | ".join(str(v) for v in at.values()) + " |")
        examples = r["ranking_ceiling"]["qqp_tune"].get("top_non_duplicates_no_guard", [])
        if examples:
            lines += ["", "The highest-cosine pairs of the tuning part labelled *not* duplicate that no guard objects to "
                      "(what caps precision at the top of every ranking):", ""]
            lines += [f"- {c:.3f}: \"{q1}\" / \"{q2}\"" for c, q1, q2 in examples]
    c = r["consistency_with_deduplicate"]
    lines += ["", "Hits by kind at defaults: " + "; ".join(f"{k}: {m['hits_by_kind']}" for k, m in r["defaults"].items()),
              "", f"Cross-check: the per-pair decision agreed with `deduplicate()` on {c['agree']} of {c['pairs']} "
              "two-row tables.", "", f"{r['texts_embedded']} texts embedded in {r['embed_seconds']} s; "
              f"whole benchmark {r['seconds']} s; 1-minute load average {r.get('load_average_1min')} (2 cores "
              "shared with other work).", ""]
    return "\n".join(lines)
