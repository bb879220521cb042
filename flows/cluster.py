"""Map/reduce stages on a Dask cluster: each partition a Prefect task on a `DaskTaskRunner` (prefect-dask).

`SLUICE_CLUSTER=dask` (or `sluice route --cluster dask`) routes through here; the default, `local`, is the
single-process path (`sluice.stages.route.stream.route_file`), and both write the same output. With an `address`
the tasks go to that running cluster's scheduler; without one prefect-dask starts a temporary `LocalCluster` on
127.0.0.1 for the flow run and closes it after. How to run a real cluster: docs/cluster.md.

Why Dask and not Ray (prefect-ray): the partitions are plain Python functions over Parquet row groups, which is
what `distributed` schedules, in a few hundred MB a worker; its scheduler and workers are two pip-installed commands
(`dask scheduler`, `dask worker ADDRESS`), and a local cluster starts in seconds on a 2-core machine, where Ray's
raylet, GCS and object store cost more memory and start time than the work they would spread. Nothing here needs
Ray's actors or its object store.

    on_dask(cluster, stage, job)               job(mapper) in one flow run on the cluster: its maps are
                                               `partition` tasks (tasks/partition.py)
    route_on_cluster(cluster, src, dst, ...)   `sluice route`: route_file, or on Dask as partitioned
                                               map/reduce (sluice.stages.route.partitioned)
    dedup_on_cluster(cluster, rows, cfg, ...)  `deduplicate`, its near stage's partitions on Dask
                                               (`sluice dedup --cluster dask`, `SLUICE_CLUSTER=dask`)
    DaskCluster(cluster)                       `sluice run`'s stages' cluster (`StageContext.cluster`): the
                                               dedup and route stages run their maps through `on_dask`
"""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

import pyarrow as pa
from prefect import flow
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner

from sluice.config import ClusterSettings, RouterSettings
from sluice.contracts.columns import DEFAULT_MAX_TOKENS
from sluice.stages.dedup.deduplicate import DedupConfig, deduplicate
from sluice.stages.mapping import Mapper
from sluice.stages.route.partitioned import route_partitioned
from sluice.stages.route.stream import BATCH_ROWS, route_file
from tasks.partition import prefect_map

if TYPE_CHECKING:
    from models.catalogue import Catalogue
    from sluice.stages.route.learned import LearnedRouter
    from sluice.stages.route.scorers import Scorer

T = TypeVar("T")


def task_runner(cluster: ClusterSettings) -> DaskTaskRunner:
    """The running cluster at `cluster.address`, or a temporary local one of `cluster.workers` processes."""
    if cluster.address:
        return DaskTaskRunner(address=cluster.address)
    return DaskTaskRunner(cluster_kwargs={
        "n_workers": cluster.workers, "threads_per_worker": cluster.threads_per_worker, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None,
    })


# the job of each `map-reduce` flow run in this process, by key (`on_dask`)
_JOBS: dict[str, Callable[[Mapper], Any]] = {}


def _job(key: str) -> Callable[[Mapper], Any]:
    return _JOBS[key]


@flow(name="map-reduce", validate_parameters=False)
def map_reduce(stage: str, job_key: str) -> Any:
    """`job(mapper)`: a map/reduce stage whose maps are this flow run's `partition` tasks (on its task runner).

    Prefect sends the flow run (its parameters, and this function, pickled by value with the globals it reads)
    with every task it submits; a dedup job holds the batch's rows, and at 1M rows 16 tasks made an 8 GB graph:
    the Dask scheduler was killed at 18 GB (issue 19). So the job is looked up by key, through a module-level
    function (pickled by reference), never passed or read as a global here."""
    return _job(job_key)(prefect_map)


def on_dask(cluster: ClusterSettings, stage: str, job: Callable[[Mapper], T]) -> T:
    """Run `job(mapper)` in one `map-reduce` flow run on the Dask cluster `cluster` names."""
    key = uuid.uuid4().hex
    _JOBS[key] = job
    try:
        with _one_prefect_api():
            return map_reduce.with_options(task_runner=task_runner(cluster), flow_run_name=f"{stage}-partitioned")(
                stage, key)
    finally:
        del _JOBS[key]


@dataclass(frozen=True)
class DaskCluster:
    """`sluice.stages.mapping.Cluster` on Dask, for a run's table stages: `cluster(stage, job)` is `on_dask`."""

    settings: ClusterSettings
    engine: str = "dask"

    def __call__(self, stage: str, job: Callable[[Mapper], T]) -> T:
        return on_dask(self.settings, stage, job)


def route_on_cluster(
    cluster: ClusterSettings,
    src: Path,
    dst: Path,
    tiers: list[str],
    settings: RouterSettings,
    catalogue: "Catalogue | None" = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    router: "Scorer | LearnedRouter | None" = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[dict[str | None, int], str | None]:
    """Route `src` into `dst` where `cluster` says: `route_file` in this process, or partitioned on Dask."""
    if cluster.engine == "local":
        return route_file(src, dst, tiers, settings, catalogue, default_max_tokens, router, batch_rows)
    return on_dask(cluster, "route", partial(route_partitioned, src, dst, tiers, settings, catalogue,
                                             default_max_tokens, router, batch_rows=batch_rows,
                                             partition_rows=cluster.partition_rows))


@contextmanager
def _one_prefect_api() -> Iterator[None]:
    """The workers report their task runs to the API the flow run uses. Without `PREFECT_API_URL`, Prefect starts
    a temporary server per process, so each worker would start its own (seconds each, runs split across them):
    start this process's temporary server now and hand its address to the tasks' serialized settings."""
    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one get_client() would start: stopped when this process exits
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def dedup_on_cluster(cluster: ClusterSettings, rows: pa.Table, cfg: DedupConfig = DedupConfig(),
                     warehouse: str | Path | None = None) -> pa.Table:
    """`deduplicate` where `cluster` says: in this process, or with the near stage's partitions (shingles,
    MinHash signatures, LSH band keys) as tasks on Dask; the rest (exact, candidate pairs, verification, semantic,
    cache) runs on the driver. The signatures are spilled under `cfg.near.spill_dir` (default: the system's
    temporary folder), which the workers must share with the driver."""
    if cluster.engine == "local":
        return deduplicate(rows, cfg, warehouse)
    return on_dask(cluster, "dedup", partial(_dedup_job, rows, cfg, warehouse))


def _dedup_job(rows: pa.Table, cfg: DedupConfig, warehouse: str | Path | None, mapper: Mapper) -> pa.Table:
    return deduplicate(rows, cfg, warehouse, mapper=mapper)
