"""One Prefect task per partition of a map/reduce stage, and the `mapper` that submits them
(`sluice.stages.mapping`): on the flow run's task runner, so on a Dask cluster under flows/cluster.py."""

from __future__ import annotations

from typing import Any, Callable, Sequence

from prefect import task, unmapped
from prefect.cache_policies import NO_CACHE


@task(name="partition", cache_policy=NO_CACHE, persist_result=False)
def run_partition(fn: Callable[[Any], Any], item: Any) -> Any:
    """`fn(item)`, wherever the task runner puts it."""
    return fn(item)


def prefect_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """Every item as a `partition` task of the current flow run, submitted at once; results in item order (the
    first failure is raised)."""
    return list(run_partition.map(unmapped(fn), list(items)).result())
