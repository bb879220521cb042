"""How a stage applies one function to each of its partitions: `mapper(fn, items) -> list`, results in item order.

A stage written as map/reduce takes a `mapper` and never knows where the maps run. The default, `local_map`, is a
loop in this process. `flows/cluster.py` passes one that runs each item as a Prefect task on a Dask cluster
(`SLUICE_CLUSTER=dask`, `--cluster dask`). For that, `fn` and the items must pickle (module-level functions,
`functools.partial` of them, plain data), and every path they name must be readable and writable by the workers.

A table stage of `sluice run` gets its cluster in `StageContext.cluster`: `cluster(stage, job)` runs `job(mapper)`
with that cluster's mapper (on Dask, in one flow run per stage) and returns its result; the job itself (the
reduce) runs in the calling process.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, TypeVar

Mapper = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]
T = TypeVar("T")


def local_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """Each item in turn, in this process."""
    return [fn(item) for item in items]


class Cluster(Protocol):
    """Where a map/reduce stage sends its partitions; `engine` names it (`ClusterSettings.engine`)."""

    engine: str

    def __call__(self, stage: str, job: Callable[[Mapper], T]) -> T: ...
