"""Kill Sluice anywhere, run it again: is every row landed once, and is nothing paid twice?

For each of N kill points, in a fresh work folder: SIGKILL `sluice run data/samples/prompts.parquet` and its
whole process group a random 0-0.5 s (seeded) after the run reaches a milestone (run folder created, each stage's
output written, the 1st/2nd/4th/6th shard answered, each review output written: the cheapest tier's retry
decision, the first retry answers, the escalation to mid and the shadow sample, the first escalated answers, the
escalation to premium, the first shadow answers; results written; cycled), then run the same command until it
completes. Checked against an uninterrupted reference run of the same command:
    rows landed == input rows, each row_id once, one run landed;
    the resumed run's landed cost == the reference's landed cost + what the interrupted requests cost (within
    1e-9): every request sent before the kill and never checkpointed lands as an `interrupted` attempt, with the
    provider's usage when its answer had arrived, else estimated (input over-counted, output at max_tokens);
    the same review decisions: the landed attempts (row, kind, tier, status), interrupted ones aside, equal the
    reference's;
    provider-side re-sends: requests the loopback provider answered more than once (work in flight at the kill),
    each of which must be on the bill (interrupted attempts >= re-sends).
The tiers are API tiers on a loopback OpenAI-compatible server with a small per-request delay (so kills land
inside every stage); shards of 16 rows. The run is the crash harness's review scenario (tests/support/crash.py):
every answer under a JSON Schema, chosen rows answered invalidly by the provider (some retried once, some
escalated once or twice, some failing everywhere), a 10% shadow sample of the small tier answered by premium.

    .venv/bin/python bench/crash_resume.py [--points 20] [--seed 7]

Writes bench/results/crash_resume.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.crash import (  # noqa: E402
    MILESTONES,
    REVIEW_MILESTONES,
    ReplayingServer,
    all_api_catalogue,
    crash_and_resume,
    reference_run,
    review_args,
    review_faults,
)


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
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "sluice", "flows", "tasks", "models", "bench"],
                           cwd=ROOT, capture_output=True, text=True).stdout.strip()
    run_args = review_args(work)
    with ReplayingServer(faults=review_faults(args.delay)) as server:
        catalogue = all_api_catalogue(work / "catalogue.toml", server.base_url)
        ref_wall, ref = reference_run(dataset, work / "reference", catalogue, server, args=run_args)
        print(f"reference: {ref_wall:.1f} s, {ref.rows_landed} rows, ${ref.cost_usd:.6f}, "
              f"{ref.provider_requests} requests, attempts {ref.attempts_by_kind}", flush=True)
        outcomes = []
        for i in range(args.points):
            # a milestone the run passes, then a random delay: every kill lands inside the run, in every stage
            milestone, delay = MILESTONES[i % len(MILESTONES)], rng.uniform(0.0, 0.5)
            o = crash_and_resume(dataset, work / f"kill-{i:02d}", catalogue, server, milestone=milestone,
                                 delay_s=delay, args=run_args)
            outcomes.append(o)
            print(f"kill {i:2d} {delay:.2f} s after {milestone} at {o.kill_at_s:5.1f} s ({o.stage_at_kill}): "
                  f"resumed in {o.attempts} run(s), {o.rows_landed} rows, ${o.cost_usd:.6f}, "
                  f"decisions {'same' if o.decisions == ref.decisions else 'DIFFERENT'}, "
                  f"provider re-sent {o.provider_resent} (${o.provider_resent_usd:.6f}), interrupted {o.interrupted} "
                  f"({o.interrupted_estimated} estimated, ${o.interrupted_cost_usd:.6f})", flush=True)

    expected_rows = ref.rows_landed
    ok = [o for o in outcomes if o.rows_landed == o.distinct_rows == expected_rows and o.runs_landed >= 1
          and abs(o.cost_usd - o.interrupted_cost_usd - ref.cost_usd) < 1e-9 and o.decisions == ref.decisions]
    cut_cost = sum(o.interrupted_cost_usd for o in outcomes)
    in_review = [o for o in outcomes if o.milestone in REVIEW_MILESTONES]
    result = {
        "commit": commit,
        "uncommitted_changes_under_sluice_flows_tasks_models_bench": dirty.splitlines(),
        "points": args.points,
        "seed": args.seed,
        "delay_s": args.delay,
        "reference": {"wall_s": round(ref_wall, 2), **asdict(ref)},
        "resumes_complete": len(ok),
        "rows_lost": sum(max(0, expected_rows - o.distinct_rows) for o in outcomes),
        "rows_landed_twice_in_a_run": sum(o.rows_landed - o.distinct_rows for o in outcomes),
        "kills_after_landing_rerun_from_cache": sum(o.runs_landed > 1 for o in outcomes),
        "max_cost_diff_usd": max(abs(o.cost_usd - o.interrupted_cost_usd - ref.cost_usd) for o in outcomes),
        "same_review_decisions": sum(o.decisions == ref.decisions for o in outcomes),
        "kills_timed_from_a_review_milestone": len(in_review),
        "kills_with_a_review_output_last_written": sum(o.stage_at_kill.startswith("review") for o in outcomes),
        "provider_resent_total": sum(o.provider_resent for o in outcomes),
        "provider_resent_max": max(o.provider_resent for o in outcomes),
        "interrupted_total": sum(o.interrupted for o in outcomes),
        "interrupted_estimated_total": sum(o.interrupted_estimated for o in outcomes),
        "interrupted_cost_usd_total": cut_cost,
        "interrupted_cost_usd_max": max(o.interrupted_cost_usd for o in outcomes),
        "kills_with_resent_not_billed": sum(o.interrupted < o.provider_resent for o in outcomes),
        # what the provider itself billed for the re-sends' extra copies (its token counts), against the bill
        "provider_resent_usd_total": sum(o.provider_resent_usd for o in outcomes),
        "kills_billed_under_the_provider": sum(o.interrupted_cost_usd < o.provider_resent_usd - 1e-12
                                               for o in outcomes),
        "kills_that_hit_a_running_process": sum(o.killed for o in outcomes),
        "outcomes": [asdict(o) for o in outcomes],
    }
    out = ROOT / "bench" / "results" / "crash_resume.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# crash and resume: {args.points} random SIGKILL points (seed {args.seed})", "",
        f"Measured at commit `{commit}`" + (" (with uncommitted changes, listed in the .json)" if dirty else "")
        + f", `bench/crash_resume.py --points {args.points} --seed {args.seed}`: the review scenario "
        "(every answer under a JSON Schema; provider answers chosen rows invalidly; 10% shadow sample).", "",
        f"- resumes that completed with every row landed once, the reference cost plus their interrupted "
        f"requests' cost, and the reference's review decisions: **{len(ok)}/{args.points}**",
        f"- rows lost: **{result['rows_lost']}**, rows landed twice in a run: "
        f"**{result['rows_landed_twice_in_a_run']}**, "
        f"largest landed-cost difference (less the interrupted requests): ${result['max_cost_diff_usd']:.2e}",
        f"- provider-side re-sends (requests in flight at the kill, answered again after resume): "
        f"{result['provider_resent_total']} in total, at most {result['provider_resent_max']} per kill "
        f"(bounded by the 16-row shard)",
        f"- re-sent requests on the bill: **{result['interrupted_total']} interrupted attempts** landed "
        f"({result['interrupted_estimated_total']} with usage estimated: no answer came back; the others at the "
        f"provider's usage), **${cut_cost:.6f}** in the landed cost, at most "
        f"${result['interrupted_cost_usd_max']:.6f} per kill ({100 * cut_cost / max(ref.cost_usd, 1e-12):.1f}% of "
        f"one reference run's cost over all {args.points} kills); kills with a re-send not on the bill: "
        f"**{result['kills_with_resent_not_billed']}**. The provider's own bill for the re-sends' extra copies: "
        f"${result['provider_resent_usd_total']:.6f}; kills where the landed bill is under it: "
        f"**{result['kills_billed_under_the_provider']}**. The bill is an upper bound: interrupted attempts can "
        f"outnumber re-sends (a request written down as sent may not have reached the provider before the kill), "
        f"and one whose answer never came back is billed at its max_tokens of output",
        f"- kills that hit a running process: **{result['kills_that_hit_a_running_process']} of {args.points}**",
        f"- kills that came after the run had landed (the rerun is a new run, answered from the cache at $0 except "
        f"the failed rows, asked again): {result['kills_after_landing_rerun_from_cache']}, costing "
        f"${sum(o.rerun_cost_usd for o in outcomes):.6f} in all",
        f"- kills in the review stage: **{len(in_review)} of {args.points}** timed from a review output "
        f"(retry, escalation or shadow partition, or their first answers); "
        f"{result['kills_with_a_review_output_last_written']} with a review output as the last file written; "
        f"landed attempts (row, kind, tier, status) equal to the reference's: "
        f"**{result['same_review_decisions']}/{args.points}**",
        f"- reference run: {ref_wall:.1f} s wall, {ref.rows_landed} rows, ${ref.cost_usd:.6f}, "
        f"{ref.provider_requests} requests; attempts: "
        + ", ".join(f"{k} {v}" for k, v in sorted(ref.attempts_by_kind.items())), "",
        "| kill | timed from | at s | last written | resume runs | rows | cost $ | same decisions | provider re-sent "
        "| provider re-sent $ | interrupted (estimated) | interrupted $ |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ] + [f"| {i} | {o.milestone} | {o.kill_at_s:.1f} | {o.stage_at_kill} | {o.attempts} | "
         f"{o.rows_landed} x {o.runs_landed} run(s) | {o.cost_usd:.6f} | "
         f"{'yes' if o.decisions == ref.decisions else 'NO'} | {o.provider_resent} | {o.provider_resent_usd:.6f} | "
         f"{o.interrupted} ({o.interrupted_estimated}) | {o.interrupted_cost_usd:.6f} |" for i, o in enumerate(outcomes)]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:10]))


if __name__ == "__main__":
    main()
