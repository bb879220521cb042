"""The cluster path (issue 19): `sluice route` and `sluice dedup` on a Dask cluster of two local workers against the
single process.

For each case the same generated file (bench/scale.py's `prompt_file`: real prompts with edits, 64k-row row groups)
is routed (or deduplicated) twice, each run a child process timed from start to exit:

    single    `sluice route IN -o OUT ...` (the default, `route_file` in one process; `sluice dedup` likewise)
    cluster   `sluice route IN -o OUT ... --cluster-address tcp://127.0.0.1:PORT`: a `dask scheduler` and two
              `dask worker --nthreads 1 --no-nanny` processes started before (as a standing cluster would be), and
              closed after so each case's workers are fresh; every process reports to one Prefect temporary server
              this script starts (PREFECT_API_URL), as a real cluster shares one Prefect API

Peak memory: the driver's and each worker's own peak RSS (GNU time's %M, `/usr/bin/time`), and the highest RSS
sampled every 50 ms (psutil) beside it. The two outputs are compared row group by row group (identical or the
bench fails). The 10M-row figures are a projection from the measured 1M run (stated as such in the results), not
a measurement.

    .venv/bin/python bench/cluster.py                  # 1M rows, every case; writes results
    .venv/bin/python bench/cluster.py --cases dedup-exact+near   # one case (the others' results are kept)
    .venv/bin/python bench/cluster.py --rows 100000    # a smaller file
    .venv/bin/python bench/cluster.py --markdown-only  # re-render bench/results/cluster.md from the JSON

Wall times are on a 2-core machine shared with other jobs (the 1-minute load average before and after each run
is recorded): two workers on two busy cores cannot be expected to beat one process; the run shows what the
cluster path costs and holds, not a speed-up on this box.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results"
BIN = ROOT / ".venv" / "bin"
sys.path.insert(0, str(ROOT / "bench"))

from scale import TMP, prompt_file, router_dir  # noqa: E402

# case: (sluice command, its options). The dedup case runs the stages the cluster path spreads (exact, near: the
# near stage's partitions are signed on the workers); the semantic stage runs in the driver either way.
CASES = {"heuristic": ("route", []), "router-share-0.2": ("route", ["--router", "{router}", "--premium-share", "0.2"]),
         "dedup-exact+near": ("dedup", ["--only", "exact,near"])}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Sampler(threading.Thread):
    """The highest RSS of each watched process, sampled every 50 ms."""

    def __init__(self, procs: dict[str, int]):
        super().__init__(daemon=True)
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in procs.items()}
        self.peak = {name: 0 for name in procs}
        self.stop = threading.Event()

    def watch(self, name: str, pid: int) -> None:
        import psutil

        self.procs[name], self.peak[name] = psutil.Process(pid), 0

    def run(self) -> None:
        while not self.stop.is_set():
            for name, p in list(self.procs.items()):
                try:
                    self.peak[name] = max(self.peak[name], p.memory_info().rss)
                except Exception:  # noqa: BLE001  (exited between samples)
                    pass
            time.sleep(0.05)


class _Child:
    """A command run under GNU time (`/usr/bin/time -f %M`, Debian package `time`): its peak RSS is the
    command's own. (ru_maxrss from wait4 on a child of this script is not: a child forked from a process keeps
    the parent's RSS at the fork as a floor across exec, about 220 MB here once distributed is imported.)"""

    def __init__(self, cmd: list[str], env: dict, name: str, sampler: "_Sampler", out=subprocess.DEVNULL):
        import psutil

        self.rss_file = TMP / f"rss_{name}_{os.getpid()}.txt"
        self.time = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(self.rss_file), *cmd], env=env,
                                     stdout=out, stderr=subprocess.STDOUT)
        for _ in range(200):
            kids = psutil.Process(self.time.pid).children()
            if kids or self.time.poll() is not None:
                break
            time.sleep(0.01)
        self.pid = kids[0].pid if kids else self.time.pid
        sampler.watch(name, self.pid)

    def stop(self) -> None:
        try:
            os.kill(self.pid, 15)
        except ProcessLookupError:
            pass

    def wait(self, patience_s: float = 60) -> tuple[int, float]:
        """Exit status and peak RSS in MB (the command is killed after `patience_s` seconds)."""
        try:
            code = self.time.wait(timeout=patience_s)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, 9)
            code = self.time.wait()
        rss = float(self.rss_file.read_text().split()[-1]) / 1024  # kB
        self.rss_file.unlink()
        return code, rss


def _sluice(command: str, src: Path, dst: Path, extra: list[str], env: dict, sampler: _Sampler) -> dict:
    load0, t0 = _load(), time.perf_counter()
    proc = _Child([str(BIN / "sluice"), command, str(src), "-o", str(dst), *extra], env, "driver", sampler,
                  out=subprocess.PIPE)
    out = proc.time.stdout.read().decode() if proc.time.stdout else ""
    code, maxrss = proc.wait(patience_s=3600)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"sluice {command} failed ({code}):\n{out[-3000:]}")
    return {"wall_s": round(wall, 2), "driver_rss_mb": round(maxrss, 1),
            "driver_sampled_mb": round(sampler.peak.pop("driver") / 2**20, 1), "load": [load0, _load()],
            "summary": out.strip().splitlines()[-2:]}


def _same(a: Path, b: Path) -> bool:
    import pyarrow.parquet as pq

    fa, fb = pq.ParquetFile(a), pq.ParquetFile(b)
    if fa.metadata.num_rows != fb.metadata.num_rows or not fa.schema_arrow.equals(fb.schema_arrow):
        return False
    ia, ib = fa.iter_batches(batch_size=65_536), fb.iter_batches(batch_size=65_536)
    return all(x.equals(y) for x, y in zip(ia, ib))


def _cluster(env: dict, sampler: _Sampler) -> tuple[str, list[_Child]]:
    from distributed import Client

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _Child([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                        "--no-dashboard"], env, "scheduler", sampler)
    workers = [_Child([str(BIN / "dask"), "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                       "--memory-limit", "0", "--name", f"w{i}"], env, f"worker{i}", sampler) for i in range(2)]
    with Client(address, timeout=120) as client:
        client.wait_for_workers(2, timeout=180)
    return address, [scheduler, *workers]


def run_case(case: str, rows: int, env: dict, sampler: _Sampler) -> dict:
    src = prompt_file(rows)
    command, options = CASES[case]
    extra = [a.format(router=router_dir()) for a in options]
    single_out, cluster_out = TMP / f"cluster_single_{rows}.parquet", TMP / f"cluster_dask_{rows}.parquet"
    single = _sluice(command, src, single_out, extra, env, sampler)
    address, procs = _cluster(env, sampler)
    try:
        on_dask = _sluice(command, src, cluster_out, [*extra, "--cluster-address", address], env, sampler)
    finally:  # workers first (a worker whose scheduler has gone keeps trying to reconnect)
        for p in procs[1:]:
            p.stop()
        ended = [p.wait(30)[1] for p in procs[1:]]
        procs[0].stop()
        ended.insert(0, procs[0].wait(30)[1])
    on_dask["scheduler_rss_mb"] = round(ended[0], 1)
    on_dask["worker_rss_mb"] = [round(m, 1) for m in ended[1:]]
    on_dask["worker_sampled_mb"] = [round(sampler.peak.pop(f"worker{i}") / 2**20, 1) for i in range(2)]
    sampler.peak.pop("scheduler")
    for name in ("worker0", "worker1", "scheduler"):
        sampler.procs.pop(name)
    same = _same(single_out, cluster_out)
    if not same:
        raise SystemExit(f"{case}: the cluster output differs from the single-process output")
    for p in (single_out, cluster_out):
        p.unlink()
    return {"case": case, "rows": rows, "single": single, "cluster": on_dask, "identical": same,
            "wall_ratio": round(on_dask["wall_s"] / single["wall_s"], 2),
            "driver_rss_ratio": round(on_dask["driver_rss_mb"] / single["driver_rss_mb"], 2)}


def render(results: list[dict]) -> str:
    lines = ["# The cluster path: `sluice route` and `sluice dedup` on two local Dask workers (bench/cluster.py)", "",
             "Machine: 2 CPU cores shared with other engineers' jobs; the 1-minute load average before and after "
             "each run is in the table. Each case routes (or deduplicates) the same generated file (bench/scale.py's prompt file, "
             "64k-row row groups) in one process (`sluice route`, `sluice dedup`) and on a Dask cluster started beforehand "
             "(`dask scheduler` + two `dask worker --nthreads 1` processes on 127.0.0.1, `--cluster-address`). "
             "Peak RSS is each process's own (GNU time %M); the outputs were compared row group by row group and "
             "are identical in every case.", "",
             "| case | rows | single s | cluster s | cluster / single | single driver MB | cluster driver MB | "
             "worker MB (each) | scheduler MB | load single | load cluster |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s, c = r["single"], r["cluster"]
        lines.append(f"| {r['case']} | {r['rows']:,} | {s['wall_s']} | {c['wall_s']} | {r['wall_ratio']}x | "
                     f"{s['driver_rss_mb']} | {c['driver_rss_mb']} | {' / '.join(map(str, c['worker_rss_mb']))} | "
                     f"{c['scheduler_rss_mb']} | {s['load'][0]} -> {s['load'][1]} | {c['load'][0]} -> {c['load'][1]} |")
    lines += ["", "Two workers on two cores already busy with other jobs (load 5-8) share the same CPU the single "
              "process had, so the cluster path is slower here: it pays the Prefect flow and task runs, pickling "
              "results to the driver, and the copy of the parts into one file, and a two-pass policy reads each "
              "partition twice as the single process does. What it buys is spreading the batches over machines: "
              "memory per process stays a partition's worth, and on machines of their own the workers' time "
              "would overlap (not measured: one 2-core box). All processes together hold more than the single "
              "process (each worker imports the stack).", "",
              "The dedup case (`--only exact,near`) spreads only the near stage's signing (shingles and MinHash "
              "signatures of 64k-row partitions, spilled where the driver reads them back): the driver still reads "
              "all rows, computes the exact keys, collects the LSH candidates and verifies them, so its memory "
              "grows with rows as the single process's does. The semantic stage runs in the driver on either path "
              "(not in this case: its MiniLM pass takes 15 minutes at 1M rows on this box; bench/results/scale.md). "
              "The first run of this case at 1M failed: Prefect sent the flow run, which held the batch's rows, "
              "with each of the 16 partition tasks (an 8 GB graph), and the Dask scheduler was killed at 18 GB. "
              "Now the job is looked up by key on the driver and a partition travels as the path of its prompts "
              "(flows/cluster.py, `NearPartition.__reduce__`); the driver's extra ~330 MB over the single process "
              "is the Prefect and Dask clients and the partitions' prompt files being written.",
              "", "## 10M rows: a projection, not a measurement", "",
              "10M rows were not run (time). Projected from the runs above:", ""]
    for r in results:
        n, s, c = r["rows"], r["single"], r["cluster"]
        k = 10_000_000 / n
        if r["case"].startswith("dedup"):
            lines.append(f"- {r['case']}: time grows with rows: single about {s['wall_s'] * k / 60:.0f} min, "
                         f"cluster about {c['wall_s'] * k / 60:.0f} min on this box (linear; the LSH candidates "
                         f"grow faster where duplicates do). A worker holds one partition ({max(c['worker_rss_mb'])}"
                         f" MB measured) at any size; the driver grows with rows: linear from 1M, about "
                         f"{c['driver_rss_mb'] * k / 1024:.0f} GB at 10M (single: {s['driver_rss_mb'] * k / 1024:.0f}"
                         " GB). 10M rows of dedup do not fit 2 GiB on either path: that needs the exact keys and "
                         "candidate verification partitioned too (hash-partitioned by request fingerprint), "
                         "not built.")
            continue
        share = "share" in r["case"]
        kept = (8 if share else 0) * (10_000_000 - n) / 2**20  # the driver's scores: 8 bytes a row (two passes)
        lines.append(f"- {r['case']}: time grows with rows (every batch costs about the same): single about "
                     f"{s['wall_s'] * k / 60:.0f} min, cluster about {c['wall_s'] * k / 60:.0f} min on this box. "
                     f"A worker's memory does not grow with rows (one partition of 4 x 64k-row batches at a time: "
                     f"{max(c['worker_rss_mb'])} MB measured); the driver's "
                     + (f"grows only by the scores it keeps between the passes, 8 bytes a row: about {c['driver_rss_mb'] + kept:.0f}"
                        f" MB at 10M (the single process: about {s['driver_rss_mb'] + kept:.0f} MB)" if share else
                        f"keeps nothing per row under thresholds: about {c['driver_rss_mb']:.0f} MB at 10M (the single "
                        f"process: about {s['driver_rss_mb']:.0f} MB)") + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--markdown-only", action="store_true")
    args = ap.parse_args()
    path = OUT / "cluster.json"
    kept = json.loads(path.read_text())["results"] if path.exists() else []
    if args.markdown_only:
        (OUT / "cluster.md").write_text(render(json.loads(path.read_text())["results"]))
        return
    os.environ.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")  # before Prefect is imported
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    server.start()
    env = {**os.environ, "PREFECT_API_URL": server.api_url, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "DO_NOT_TRACK": "1"}
    env.pop("SLUICE_CLUSTER", None)
    env.pop("SLUICE_CLUSTER_ADDRESS", None)
    sampler = _Sampler({})
    sampler.start()
    results = []
    for case in args.cases.split(","):
        print(f"{case} at {args.rows:,} rows ...", flush=True)
        results.append(run_case(case, args.rows, env, sampler))
        print(json.dumps(results[-1]), flush=True)
    ran = {(r["case"], r["rows"]) for r in results}
    results = [r for r in kept if (r["case"], r["rows"]) not in ran] + results
    sampler.stop.set()
    server.stop()
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"results": results}, indent=1) + "\n")
    (OUT / "cluster.md").write_text(render(results))
    print((OUT / "cluster.md").read_text())


if __name__ == "__main__":
    main()
