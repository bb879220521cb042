"""Route a Parquet file as partitioned map/reduce: its rows cut into partitions, each routed wherever the `mapper`
runs it (`sluice.stages.mapping`: this process by default, a Dask cluster through Prefect with `flows/cluster.py`).

The output is the one `route_file` writes (and so the one `route_batch` gives on the whole table): same rows, in
the same order, with the same tiers, scores and reasons, to the last bit. A partition is a range of whole
`batch_rows` record batches (at least `partition_rows` rows), read as exactly the batches `route_file` reads: a
learned router's scores can differ in the last bit when a batch holds other rows (the matrix products round
differently), and under a share or a budget one such bit can swap two tied rows' tiers. A worker reads the row
groups its range touches (a row group across two ranges is read by both) and drops the rows outside it.
The steps reuse `route_file`'s own (`sluice.stages.route.stream`):

    thresholds        map: route each partition batch by batch, write its part file
    share or budget   map 1: score each partition's pending rows (`score_batches`), spill their reasons to a
                      file per partition, return the scores (and, for a budget, the planned costs);
                      reduce: assign every tier at once (`Scored.plan`: the share's quantile over all the rows'
                      scores, or the budget plan), as one process would;
                      map 2: attach each partition's slice of the plan and its spilled reasons
                      (`attach_batches`), write its part file
    then              the part files are copied into the output in partition order, a row group at a time

Parts and spills live in `<output>.parts/`, removed at the end: the workers read the input and write there, so
both must be on storage the driver and every worker reach under the same path (one machine, or a shared
filesystem). The driver holds what `route_file`'s two passes hold (8 bytes a row of scores, plus 8 x tiers of
planned costs in budget mode) and one row group while it copies; a worker holds one batch and its features.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from sluice.config import RouterSettings
from sluice.contracts.columns import DEFAULT_MAX_TOKENS
from sluice.stages.mapping import Mapper, local_map
from sluice.stages.route.assign import TierPlan, heuristic_route, learned_route
from sluice.stages.route.scorers import Scorer, scorer_for
from sluice.stages.route.stream import BATCH_ROWS, Scored, _Output, attach_batches, score_batches

if TYPE_CHECKING:
    from models.catalogue import Catalogue
    from sluice.stages.route.learned import LearnedRouter

PARTITION_ROWS = 4 * BATCH_ROWS


def row_partitions(src: Path, batch_rows: int = BATCH_ROWS,
                   partition_rows: int = PARTITION_ROWS) -> list[tuple[int, int]]:
    """Row ranges [lo, hi) covering `src`, each a whole number of `batch_rows` batches of at least
    `partition_rows` rows (the last one ends with the file)."""
    n = pq.ParquetFile(src).metadata.num_rows
    step = max(1, -(-partition_rows // batch_rows)) * batch_rows
    return [(lo, min(lo + step, n)) for lo in range(0, n, step)]


def _range_batches(src: Path, batch_rows: int, lo: int, hi: int) -> Iterator[pl.DataFrame]:
    """Rows lo:hi of `src` in the record batches `route_file` reads them in (`lo` is on its batch grid): the row
    groups holding them are read, the rows outside the range dropped, the rest cut on the grid."""
    f = pq.ParquetFile(src)
    groups, pos, start = [], 0, None
    for g in range(f.metadata.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if pos < hi and pos + n > lo:
            groups.append(g)
            start = pos if start is None else start
        pos += n
    if not groups:
        return
    pos, held, have = start, [], 0
    for batch in f.iter_batches(batch_size=batch_rows, row_groups=groups):
        a, b = max(lo - pos, 0), min(hi - pos, batch.num_rows)
        pos += batch.num_rows
        while a < b:
            take = min(batch_rows - have, b - a)
            held.append(batch.slice(a, take))
            have, a = have + take, a + take
            if have == batch_rows:
                yield _frame(held)
                held, have = [], 0
    if held:
        yield _frame(held)


def _frame(batches: list[pa.RecordBatch]) -> pl.DataFrame:
    df = pl.from_arrow(pa.Table.from_batches(batches))
    assert isinstance(df, pl.DataFrame)
    return df


@dataclass(frozen=True)
class _Job:
    """What every map needs, pickled to the workers with each item. A router given as a folder
    (`settings.model`) is loaded by each worker process once, not shipped."""

    src: Path
    parts: Path
    tiers: list[str]
    settings: RouterSettings
    catalogue: "Catalogue | None"
    default_max_tokens: int
    router: "Scorer | LearnedRouter | None"
    batch_rows: int

    def part(self, i: int) -> Path:
        return self.parts / f"part-{i:05d}.parquet"

    def spill(self, i: int) -> Path:
        return self.parts / f"reasons-{i:05d}.parquet"

    def batches(self, rows: tuple[int, int]) -> Iterator[pl.DataFrame]:
        return _range_batches(self.src, self.batch_rows, *rows)

    def loaded_router(self) -> "Scorer | LearnedRouter | None":
        if self.router is None and self.settings.model is not None:
            return _load_router(self.settings.model)
        return self.router


_ROUTERS: dict[tuple[Path, int], object] = {}  # per worker process: (folder, newest file's mtime) -> router


def _load_router(path: Path):
    key = (path, max((f.stat().st_mtime_ns for f in Path(path).iterdir()), default=0))
    if key not in _ROUTERS:
        from sluice.stages.route.learned import load_router

        _ROUTERS[key] = load_router(path)
    return _ROUTERS[key]


def _route_part(job: _Job, item: tuple[int, tuple[int, int]]) -> None:
    """One pass (thresholds): route partition `i`'s batches and write them to its part file."""
    i, rows = item
    router = job.loaded_router()
    out = _Output(job.part(i))
    for df in job.batches(rows):
        out.write(heuristic_route(df.to_arrow(), job.tiers, job.settings) if router is None else
                  learned_route(df.to_arrow(), job.tiers, job.settings, router, job.catalogue,
                                job.default_max_tokens))
    out.close()


def _score_part(job: _Job, item: tuple[int, tuple[int, int]]) -> Scored:
    """Map 1: partition `i`'s scores (and planned costs); its reasons spilled beside its part file."""
    i, rows = item
    return score_batches(job.batches(rows), job.spill(i), job.tiers, job.settings, job.catalogue,
                         job.default_max_tokens, scorer_for(job.loaded_router()))


def _attach_part(job: _Job, item: tuple[int, tuple[int, int], Scored, TierPlan]) -> None:
    """Map 2: partition `i` with its slice of the plan and its spilled reasons, written to its part file."""
    i, rows, kept, plan = item
    out = _Output(job.part(i))
    attach_batches(job.batches(rows), kept, plan, job.spill(i), out, scorer_for(job.loaded_router()), job.tiers,
                   job.settings)
    out.close()


def _slice(plan: TierPlan, lo: int, hi: int) -> TierPlan:
    return TierPlan(plan.tier[lo:hi], plan.mode, None if plan.cost is None else plan.cost[lo:hi], plan.message)


def route_partitioned(
    src: Path,
    dst: Path,
    tiers: list[str],
    settings: RouterSettings,
    catalogue: "Catalogue | None" = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    router: "Scorer | LearnedRouter | None" = None,
    mapper: Mapper = local_map,
    batch_rows: int = BATCH_ROWS,
    partition_rows: int = PARTITION_ROWS,
) -> tuple[dict[str | None, int], str | None]:
    """Route `src` into `dst` as `route_file` does, each partition through `mapper`; returns rows per tier (None:
    unrouted) and the first unrouted row's reason."""
    if len(tiers) < 2:
        raise ValueError("routing needs at least two tiers")
    src, dst = Path(src).absolute(), Path(dst).absolute()
    items = list(enumerate(row_partitions(src, batch_rows, partition_rows)))
    parts = dst.with_name(dst.name + ".parts")
    shutil.rmtree(parts, ignore_errors=True)
    parts.mkdir(parents=True)
    job = _Job(src, parts, tiers, settings, catalogue, default_max_tokens, router, batch_rows)
    out = _Output(dst)
    try:
        if settings.premium_share is None and settings.budget_usd is None:
            mapper(partial(_route_part, job), items)
        else:
            scored: list[Scored] = mapper(partial(_score_part, job), items)
            plan = Scored([s for k in scored for s in k.scores], [], [c for k in scored for c in k.costs],
                          [c for k in scored for c in k.carried]).plan(len(tiers), settings)
            attach, lo = [], 0
            for (i, rows), kept in zip(items, scored):
                n = sum(len(s) for s in kept.scores)
                attach.append((i, rows, Scored(kept.scores, kept.spilled), _slice(plan, lo, lo + n)))
                lo += n
            mapper(partial(_attach_part, job), attach)
        for i, _ in items:  # reduce: the parts in order, a row group at a time, counted as route_file counts
            part = pq.ParquetFile(job.part(i))
            for g in range(part.num_row_groups):
                out.write(part.read_row_group(g))
    except BaseException:
        if out.writer is not None:
            out.writer.close()
        out.tmp.unlink(missing_ok=True)
        raise
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    out.close()
    return out.counts, out.unrouted_reason
