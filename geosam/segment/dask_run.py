"""Running a region's blocks: in this process, on a LocalCluster, or on a user's Dask cluster.

The blocks are independent tasks (:func:`geosam.segment.blocks.run_block`), so the engine is
Dask's, not ours: ``--workers N`` starts a ``dask.distributed.LocalCluster`` of N
single-threaded worker processes, ``--scheduler ADDRESS`` uses a running cluster, and one
worker (the default) runs the blocks in this process with no cluster at all. Dask retries a
block whose worker died (``retries``, and the scheduler's own reassignment of lost tasks);
each worker keeps the model it loaded for its next blocks (the process-wide caches of
:mod:`geosam.segment.blocks`). Every finished block is saved at once
(:class:`~geosam.segment.parts.Parts`), as it arrives, so an interruption loses only the
blocks in flight. Dask is imported only here, and only when a cluster is used.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tqdm import tqdm

from geosam.segment.blocks import BlockParcels, BlockTask, run_block
from geosam.utils.errors import GeosamError

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

# How long a --scheduler may take to answer before the run is refused: an address with
# nothing behind it should fail in seconds, not after Dask's default 30 s.
CONNECT_TIMEOUT_S = 5
# Times Dask reruns a block that raised (a worker that dies is reassigned by the scheduler).
RETRIES = 3
# glibc's malloc in a LocalCluster worker. Dask's nanny sets MALLOC_TRIM_THRESHOLD_=64 KiB (to
# give freed memory back at once), and setting any such variable also fixes malloc's mmap
# threshold at 128 KiB, so every mask-sized array (one point's logits: a quarter to three
# quarters of a MiB) was mapped and unmapped and the heap trimmed after each, page faults
# each time: a worker spent ~20% more CPU on a block than this process does
# (docs/benchmarks.md). A block's arrays are the same size from one block to the next, so
# below 16 MiB they come from the heap and stay there.
MMAP_THRESHOLD = 16 * 2**20
# The LocalCluster geosam starts is tuned for throughput on the cores it shares with this
# process: Dask's defaults wake every process 50 times a second (tick), sample each worker's
# stack 100 times a second (the dashboard's Profile page, left empty) and poll memory and
# system counters 10 and 2 times a second. Idle, that cost 0.10 of a core for 2 workers and
# the client, 0.02 with these (docs/benchmarks.md). A --scheduler's cluster keeps its own.
LOCAL_CLUSTER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": MMAP_THRESHOLD,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.worker.profile.enabled": False,
}


@dataclass(frozen=True)
class Engine:
    """Where blocks run: ``workers`` local processes (1: this process, no cluster) or the
    cluster at ``scheduler``."""

    workers: int = 1
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise GeosamError(f"--workers must be 1 or more, got {self.workers}")

    @property
    def in_process(self) -> bool:
        return self.scheduler is None and self.workers == 1


def run_blocks(
    tasks: Sequence[BlockTask],
    engine: Engine,
    done: Callable[[BlockParcels], None],
    progress: bool = True,
) -> None:
    """Run ``tasks`` on ``engine``, handing each finished block to ``done`` as it arrives,
    with one progress bar over blocks (windows per second, parcels so far, tqdm's ETA)."""
    started = time.perf_counter()
    windows = parcels = 0
    with tqdm(
        total=len(tasks), desc="segment", unit="block", disable=not progress, dynamic_ncols=True
    ) as bar:
        for block in _results(tasks, engine):
            done(block)
            windows, parcels = windows + block.windows, parcels + len(block.rows)
            rate = windows / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix_str(f"{rate:.2f} windows/s, {parcels} parcels", refresh=False)
            bar.update()


def _results(tasks: Sequence[BlockTask], engine: Engine) -> Iterator[BlockParcels]:
    if engine.in_process:
        yield from map(run_block, tasks)
        return
    from distributed import as_completed

    run = uuid.uuid4().hex[:8]  # two runs on one cluster must not share task keys
    with dask_client(engine) as client:
        futures = client.map(
            run_block, tasks, key=[f"geosam-block-{run}-{t.key}" for t in tasks], retries=RETRIES
        )
        for future in as_completed(futures):
            yield future.result()
            future.release()


@contextmanager
def dask_client(engine: Engine) -> Iterator[Client]:
    """A client of the cluster at ``engine.scheduler``, or of a LocalCluster of
    ``engine.workers`` processes started (and stopped) here; the dashboard is logged."""
    import dask
    from distributed import Client, LocalCluster

    if engine.scheduler is not None:
        try:
            client = Client(engine.scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise GeosamError(
                f"--scheduler {engine.scheduler}: no Dask scheduler answers there "
                f"({str(exc).splitlines()[0]}): start one (dask scheduler) or fix the address"
            ) from None
        with client:
            yield client
        return
    with (
        dask.config.set(LOCAL_CLUSTER_CONFIG),
        LocalCluster(
            n_workers=engine.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",
        ) as cluster,
        Client(cluster) as client,
    ):
        if "dashboard" in client.scheduler_info().get("services", {}):
            logger.info("Dask dashboard: %s", client.dashboard_link)
        else:
            logger.info("Dask cluster of %d workers (no dashboard: install bokeh)", engine.workers)
        yield client
