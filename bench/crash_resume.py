"""Kill Sluice anywhere, run it again: is every row landed once, and is nothing paid twice?

For each of N kill points, in a fresh work folder: SIGKILL `sluice run data/samples/prompts.parquet` and its
whole process group a random 0-0.5 s (seeded) after the run reaches a milestone (run folder created, each stage's
output written, the 1st/2nd/4th/6th shard answered, results written; cycled), then run the same command until it
completes. Checked against an uninterrupted reference run of the same command:
    rows landed == input rows, each row_id once, one run landed;
    landed cost == the reference's landed cost (within 1e-9);
    provider-side re-sends: requests the loopback provider answered more than once (work in flight at the kill).
The tiers are API tiers on a loopback OpenAI-compatible server with a small per-request delay (so kills land
inside every stage); shards of 16 rows.

    .venv/bin/python bench/crash_resume.py [--points 20] [--seed 7]

Writes bench/results/crash_resume.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sluice.testing.crash import MILESTONES, all_api_catalogue, crash_and_resume, reference_run  # noqa: E402
from sluice.testing.openai_server import Faults, OpenAICompatServer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--delay", type=float, default=0.1, help="seconds per answered request")
    args = ap.parse_args()
    dataset = ROOT / "data" / "samples" / "prompts.parquet"
    work = ROOT / "bench" / ".work" / "crash_resume"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = random.Random(args.seed)
    with OpenAICompatServer(faults=Faults(delay_s=args.delay)) as server:
        catalogue = all_api_catalogue(work / "catalogue.toml", server.base_url)
        ref_wall, ref = reference_run(dataset, work / "reference", catalogue, server)
        print(f"reference: {ref_wall:.1f} s, {ref.rows_landed} rows, ${ref.cost_usd:.6f}, "
              f"{ref.provider_requests} requests", flush=True)
        outcomes = []
        for i in range(args.points):
            # a milestone the run passes, then a random delay: every kill lands inside the run, in every stage
            milestone, delay = MILESTONES[i % len(MILESTONES)], rng.uniform(0.0, 0.5)
            o = crash_and_resume(dataset, work / f"kill-{i:02d}", catalogue, server, milestone=milestone,
                                 delay_s=delay)
            outcomes.append(o)
            print(f"kill {i:2d} {delay:.2f} s after {milestone} at {o.kill_at_s:5.1f} s ({o.stage_at_kill}): "
                  f"resumed in {o.attempts} run(s), "
                  f"{o.rows_landed} rows, ${o.cost_usd:.6f}, provider re-sent {o.provider_resent}", flush=True)

    expected_rows = ref.rows_landed
    ok = [o for o in outcomes if o.rows_landed == o.distinct_rows == expected_rows and o.runs_landed >= 1
          and abs(o.cost_usd - ref.cost_usd) < 1e-9]
    result = {
        "points": args.points,
        "seed": args.seed,
        "reference": {"wall_s": round(ref_wall, 2), **asdict(ref)},
        "resumes_complete": len(ok),
        "rows_lost": sum(max(0, expected_rows - o.distinct_rows) for o in outcomes),
        "rows_landed_twice_in_a_run": sum(o.rows_landed - o.distinct_rows for o in outcomes),
        "kills_after_landing_rerun_from_cache": sum(o.runs_landed > 1 for o in outcomes),
        "max_cost_diff_usd": max(abs(o.cost_usd - ref.cost_usd) for o in outcomes),
        "provider_resent_total": sum(o.provider_resent for o in outcomes),
        "provider_resent_max": max(o.provider_resent for o in outcomes),
        "kills_that_hit_a_running_process": sum(o.killed for o in outcomes),
        "outcomes": [asdict(o) for o in outcomes],
    }
    out = ROOT / "bench" / "results" / "crash_resume.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# crash and resume: {args.points} random SIGKILL points (seed {args.seed})", "",
        f"- resumes that completed with every row landed once and the reference cost: "
        f"**{len(ok)}/{args.points}**",
        f"- rows lost: **{result['rows_lost']}**, rows landed twice in a run: "
        f"**{result['rows_landed_twice_in_a_run']}**, "
        f"largest landed-cost difference: ${result['max_cost_diff_usd']:.2e}",
        f"- provider-side re-sends (requests in flight at the kill, answered again after resume): "
        f"{result['provider_resent_total']} in total, at most {result['provider_resent_max']} per kill "
        f"(bounded by the 16-row shard)",
        f"- kills that hit a running process: **{result['kills_that_hit_a_running_process']} of {args.points}**",
        f"- kills that came after the run had landed (the rerun is a new run, answered from the cache at $0): "
        f"{result['kills_after_landing_rerun_from_cache']}",
        f"- reference run: {ref_wall:.1f} s wall, {ref.rows_landed} rows, ${ref.cost_usd:.6f}", "",
        "| kill | at s | stage reached | resume runs | rows | cost $ | provider re-sent |",
        "|---|---|---|---|---|---|---|",
    ] + [f"| {i} | {o.kill_at_s:.1f} | {o.stage_at_kill} | {o.attempts} | {o.rows_landed} x {o.runs_landed} run(s) | "
         f"{o.cost_usd:.6f} | {o.provider_resent} |" for i, o in enumerate(outcomes)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:6]))


if __name__ == "__main__":
    main()
