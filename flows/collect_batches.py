"""collect-batches: land the runs that are waiting on their provider batches, once the batches have ended.

A run whose API tier has `batch_wait = false` submits its provider batches (OpenAI Batch, Anthropic Message
Batches), journals them in its run folder and ends "waiting on provider batch" rather than holding a worker for up
to a day. This flow, scheduled every 15 minutes (`prefect.yaml`), goes through the waiting runs, oldest first:

    poll    -> each waiting run's journaled batches, once (what has ended is journaled)
    resume  -> a run whose batches have all ended (or whose deadline has passed) is run again with its own
               arguments: its finished stages and shards are read back, the batches' results are collected (rows
               they left unanswered go in a new batch, or in real time when the deadline is near), and it lands;
               or, when it has sent new batches (a resubmission, a later pass), it waits again

Nothing is submitted twice: the resumed run adopts the journaled batches. Run it by hand:

    python -m flows.collect_batches [DATA_DIR]
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger

from flows.batch_run import sluice_run
from sluice.config import load_settings
from sluice.runs import read_manifest, waiting_runs
from tasks.infer import poll_provider_batches


@flow(name="collect-batches")
def collect_batches(data_dir: str | None = None, warehouse: str | None = None, max_runs: int = 20) -> list[dict]:
    """Resume (at most `max_runs` of) the runs under `data_dir` whose provider batches have ended."""
    logger = get_run_logger()
    settings = load_settings(warehouse=warehouse, data_dir=data_dir)
    assert settings.runs_dir is not None
    outcomes = []
    for run_dir in waiting_runs(settings.runs_dir)[:max_runs]:
        args = (read_manifest(run_dir) or {}).get("resume") or {}
        args = {**args, "data_dir": args.get("data_dir") or str(settings.data_dir)}  # the folder it was found in
        run_settings = load_settings(warehouse=args.get("warehouse"), catalogue_path=args.get("catalogue"),
                                     data_dir=args.get("data_dir"))
        tiers = run_settings.catalogue().with_run_deadline(args.get("deadline_h"))
        running = poll_provider_batches(run_dir, tiers, str(run_settings.data_dir))
        if running:
            outcomes.append({"run_id": run_dir.name, "state": "waiting", "running": running})
            continue
        logger.info("run %s: its provider batches have ended; resuming it", run_dir.name)
        summary = sluice_run(**args, run_id=run_dir.name)
        outcomes.append({"run_id": run_dir.name, "state": summary.get("status", "landed"),
                         "rows": summary.get("rows"), "cost_usd": summary.get("cost_usd")})
    logger.info("collect-batches: %d waiting run(s) looked at: %s", len(outcomes),
                ", ".join(f"{o['run_id']} {o['state']}" for o in outcomes) or "none")
    return outcomes


if __name__ == "__main__":
    print(collect_batches(sys.argv[1] if len(sys.argv) > 1 else None))
