"""The run summary, as people read it: in the terminal and as a Prefect markdown artifact."""

from __future__ import annotations


def summary_lines(summary: dict) -> list[tuple[str, str]]:
    lines = [
        ("rows", f"{summary['rows']}"),
        ("duplicates (answered free)", f"{summary['duplicates']}" + (
            f"  ({', '.join(f'{k} {v}' for k, v in summary['duplicates_by_kind'].items())})"
            if summary.get("duplicates_by_kind") else "")),
        ("quarantined", f"{summary['quarantined']}"),
        ("failed", f"{summary['failed']}"),
    ]
    for tier, n in summary["rows_per_tier"].items():
        lines.append((f"rows on tier {tier}", f"{n}  (${summary['cost_per_tier_usd'][tier]:.6f})"))
    if summary.get("escalated"):
        lines.append(("escalated by the cascade", f"{summary['escalated']}"))
    if summary.get("shadow"):
        lines.append(("shadow-sampled on premium", f"{summary['shadow']}  (${summary['shadow_cost_usd']:.6f}, "
                                                   f"{summary['shadow_agreed']} agreed)"))
    if summary.get("judge_tier"):  # quality assurance: its own line, part of the total (sluice.stages.land.judged)
        lines.append((f"judge on {summary['judge_tier']} (quality assurance)",
                      f"{summary['judge_pairs']} free-text shadow pairs, {summary['judge_requests']} requests  "
                      f"(${summary['judge_cost_usd']:.6f})"))
    if summary.get("checks_cost_usd"):  # checks of large dedup clusters: part of the total (land/checked.py)
        lines.append(("dedup cluster checks", f"{summary['clusters_checked']} clusters, "
                      f"{summary['clusters_refused']} refused  (${summary['checks_cost_usd']:.6f})"))
    if summary.get("validation_cost_usd"):  # tiers validated against their reference: in the total (validated.py)
        lines.append(("tier validation", f"{summary['tiers_validated']} tier(s), {summary['tiers_refused']} refused  "
                      f"(${summary['validation_cost_usd']:.6f})"))
    if summary.get("structured"):
        lines.append(("structured answers valid", f"{summary['structured_valid']} of {summary['structured']}"))
    if summary.get("interrupted_requests"):  # sent before a kill, never saved, sent again: billed twice, both here
        lines.append(("requests cut off by a kill", f"{summary['interrupted_requests']} sent again "
                      f"({summary['interrupted_estimated']} with usage estimated)  "
                      f"(${summary['interrupted_cost_usd']:.6f}, in the total)"))
    if summary.get("trimmed_rows"):  # its own line of the saving (sluice.stages.land.trimmed)
        lines.append(("prompt trimming", f"{summary['trimmed_rows']} rows, {summary['trim_tokens_saved']} input "
                      f"tokens saved  (${summary['trim_saving_usd']:.6f} saved)"))
    lines += [
        ("total cost", f"${summary['cost_usd']:.6f}"),
        ("all-premium cost", f"${summary['baseline_cost_usd']:.6f}"),
        ("saving", f"${summary['saving_usd']:.6f} ({summary['saving_pct']:.1f}%)"),
    ]
    lines += budget_lines(summary)
    lines += accuracy_lines(summary)
    lines += quality_lines(summary)
    lines += routing_lines(summary)
    return lines


def budget_lines(summary: dict) -> list[tuple[str, str]]:
    """The hard budget (sluice.stages.budget): the cap, spent, reserved and released, and the rows it turned
    away; nothing for a run without a budget."""
    b = summary.get("budget")
    if not b:
        return []
    over = f", ${b['overrun_usd']:.6f} over its reservations" if b.get("overrun_usd") else ""
    lines = [("budget", f"${b['budget_usd']:.6f}: spent ${b['spent_usd']:.6f} ({b['spent_usd'] / b['budget_usd']:.0%}); "
                        f"reserved ${b['reserved_usd']:.6f}, released ${b['released_usd']:.6f}{over}"
              if b["budget_usd"] else f"$0: spent ${b['spent_usd']:.6f}")]
    skipped = sum((b.get("skipped_rows") or {}).values())
    turned = [f"{n} {what}" for n, what in ((b.get("moved_rows"), "rows moved to a cheaper tier"),
                                           (b.get("deferred_rows"), "rows deferred (the next run answers them first)"),
                                           (skipped, "rows left out of follow-up passes")) if n]
    if turned:
        lines.append(("budget reached", "; ".join(turned)))
    return lines


def routing_lines(summary: dict) -> list[tuple[str, str]]:
    """The router the run used, the quality loop's decision for it, and the router retrained after it landed
    (sluice.stages.route.loop, sluice.stages.route.versions); nothing for runs landed before they were recorded."""
    routing, loop = summary.get("routing") or {}, summary.get("quality_loop")
    lines = [("router", f"{routing['router']}, routing by {routing.get('mode')}")] if routing.get("router") else []
    if loop:
        lines.append(("quality loop", f"{loop['setting']} {loop['from']} -> {loop['to']}: {loop['why']}"))
    if routing.get("retrain"):
        r = routing["retrain"]
        lines.append(("router retrained", f"version {r['version']}: {r['reason']}" if r.get("trained")
                      else f"no: {r['reason']}"))
    return lines


def _interval(e: dict) -> str:
    return f"{e['estimate']:.2f} [{e['low']:.2f}, {e['high']:.2f}]"


def _covers(value: float, covered: bool | None) -> str:
    return f"{value:.3f}, {'inside' if covered else 'outside'} the interval"


def quality_lines(summary: dict) -> list[tuple[str, str]]:
    """The quality estimate from the shadow sample (sluice.stages.land.estimate): the batch's with its interval
    and n, per tier, against the measured accuracy where references exist, and the floor's alert. Nothing for
    summaries landed before it existed."""
    if "quality_per_tier" not in summary:
        return []
    unjudged = summary.get("quality_unjudged") or 0
    judge_apart = [f"{summary[k]} {what}" for k, what in (("quality_unparseable", "unparseable verdicts"),
                                                          ("quality_judge_failed", "failed at the judge"))
                   if summary.get(k)]
    why = ", ".join(judge_apart) if judge_apart else "free text, no judge" if not summary.get("judge_tier") else ""
    apart = f"; {unjudged} unjudged pairs{f' ({why})' if why else ''} left out" if unjudged else ""
    if summary.get("quality_estimate") is None:
        line = f"not estimated (no judged shadow pairs{apart})"
    else:
        line = (f"{_interval({'estimate': summary['quality_estimate'], 'low': summary['quality_low'], 'high': summary['quality_high']})} "
                f"(n={summary['quality_n']} judged shadow pairs{apart}; covers {summary['quality_rows']} of "
                f"{summary['quality_answered_rows']} answered rows)")
    lines = [("quality estimate", line)]
    per_tier = []
    for tier, e in summary["quality_per_tier"].items():
        if e.get("assumed"):
            per_tier.append(f"{tier} 1 (premium: acceptable by definition)")
        elif e.get("estimate") is None:
            per_tier.append(f"{tier} not estimated")
        else:
            by_judge = (f", {e['judged_by_judge']} by the judge of which {e['split']} split"
                        if e.get("judged_by_judge") else "")
            per_tier.append(f"{tier} {_interval(e)} (n={e['n']}{by_judge})")
    lines.append(("quality estimate per tier", "; ".join(per_tier)))
    checks = [f"{tier}'s judged shadow rows measured {_covers(e['shadow_accuracy'], e['covers_shadow_accuracy'])} "
              f"(n={e['shadow_graded']})"
              for tier, e in summary["quality_per_tier"].items() if e.get("shadow_graded")]
    if summary.get("quality_accuracy") is not None:
        checks.append(f"the covered rows measured {_covers(summary['quality_accuracy'], summary['quality_covers_accuracy'])}")
    if checks:
        lines.append(("quality estimate vs references", "; ".join(checks)))
    if summary.get("min_quality") is not None:
        lines.append(("quality floor", f"{summary['min_quality']:.2f}: " + (summary.get("quality_alert") or "met")))
    return lines


def accuracy_lines(summary: dict) -> list[tuple[str, str]]:
    """Accuracy against the references, next to the cost (nothing when no row was graded)."""
    if not summary.get("graded"):
        return []
    per_tier = "; ".join(f"{tier} {v['accuracy']:.2f} ({v['correct']}/{v['graded']})"
                         for tier, v in summary.get("accuracy_per_tier", {}).items())
    lines = [("accuracy (graded rows)", f"{summary['accuracy']:.3f}  ({summary['correct']} of {summary['graded']} "
                                        f"rows correct)")]
    if summary.get("baseline_graded"):  # the all-premium baseline's own answers are known (a replay baseline)
        text = f"{summary['baseline_accuracy']:.3f}  ({summary['baseline_correct']} of {summary['baseline_graded']}"
        if summary["baseline_accuracy"]:
            text += f"; this run kept {summary['accuracy'] / summary['baseline_accuracy']:.1%} of it"
        lines.append(("all-premium accuracy", text + ")"))
    lines.append(("accuracy per tier", per_tier))
    return lines


def summary_markdown(summary: dict, run: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary_lines(summary))
    return f"# Sluice run `{run['run_id']}` — dataset `{run['dataset']}`\n\n| | |\n|---|---|\n{rows}\n"


def summary_table(summary: dict) -> list[dict]:
    """Per tier rows and cost, then the run's totals: from `sluice.stages.land.results.summarise`."""
    rows = [
        {"tier": tier, "rows": n, "cost_usd": round(summary["cost_per_tier_usd"][tier], 6)}
        for tier, n in summary["rows_per_tier"].items()
    ]
    rows += [
        {"tier": "duplicates (answered free)", "rows": summary["duplicates"], "cost_usd": 0.0},
        {"tier": "quarantined", "rows": summary["quarantined"], "cost_usd": 0.0},
        {"tier": "failed", "rows": summary["failed"], "cost_usd": None},
        *([{"tier": f"judge on {summary['judge_tier']} (quality assurance)", "rows": summary["judge_pairs"],
            "cost_usd": round(summary["judge_cost_usd"], 6)}] if summary.get("judge_tier") else []),
        *([{"tier": "dedup cluster checks", "rows": summary["clusters_checked"],
            "cost_usd": round(summary["checks_cost_usd"], 6)}] if summary.get("checks_cost_usd") else []),
        *([{"tier": "tier validation", "rows": summary["tiers_validated"],
            "cost_usd": round(summary["validation_cost_usd"], 6)}] if summary.get("validation_cost_usd") else []),
        {"tier": "total", "rows": summary["rows"], "cost_usd": round(summary["cost_usd"], 6)},
        {"tier": "all-premium baseline", "rows": summary["rows"], "cost_usd": round(summary["baseline_cost_usd"], 6)},
        {"tier": f"saving ({summary['saving_pct']:.1f}%)", "rows": None, "cost_usd": round(summary["saving_usd"], 6)},
    ]
    if summary.get("graded"):  # accuracy next to cost: per tier, duplicates (never sent), the whole run
        per_tier = {**summary["accuracy_per_tier"], "total": {"accuracy": summary["accuracy"]}}
        per_tier["duplicates (answered free)"] = per_tier.pop("(not sent)", {"accuracy": None})
        for row in rows:
            acc = per_tier.get(row["tier"], {}).get("accuracy")
            row["accuracy"] = None if acc is None else round(acc, 4)
    return rows
