"""The run summary, as people read it: in the terminal and as a Prefect markdown artifact."""

from __future__ import annotations


def summary_lines(summary: dict) -> list[tuple[str, str]]:
    lines = [
        ("rows", f"{summary['rows']}"),
        ("exact duplicates (answered free)", f"{summary['duplicates']}"),
        ("quarantined", f"{summary['quarantined']}"),
        ("failed", f"{summary['failed']}"),
    ]
    for tier, n in summary["rows_per_tier"].items():
        lines.append((f"rows on tier {tier}", f"{n}  (${summary['cost_per_tier_usd'][tier]:.6f})"))
    lines += [
        ("total cost", f"${summary['cost_usd']:.6f}"),
        ("all-premium cost", f"${summary['baseline_cost_usd']:.6f}"),
        ("saving", f"${summary['saving_usd']:.6f} ({summary['saving_pct']:.1f}%)"),
    ]
    return lines


def summary_markdown(summary: dict, run: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary_lines(summary))
    return f"# Sluice run `{run['run_id']}` — dataset `{run['dataset']}`\n\n| | |\n|---|---|\n{rows}\n"
