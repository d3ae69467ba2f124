"""An archive run's shards in N worker processes on one machine (`nice compress --workers N`).

The run plans in the calling process and holds DST's lease; each worker process rebuilds the
same run from plain arguments (store URIs, the model's path or URI, the overrides), joins
it by its run id (and so its lease), and processes whole shards, as the pipeline's fanned-out
shard pods do: a shard commits its rows and outputs on its own, so the exactly-once and
resume guarantees are the sharded run's. Processes, not threads: the search is Python between
codec and network calls, and two processes on two cores give ~2x where threads do not.
Spawned, not forked: a forked torch or boto3 client is not safe to use.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the parent's types only; a worker imports what it needs when it starts
    from tqdm import tqdm

    from nice.compress.archive import ArchiveRun, PlanInfo

SHARDS_PER_WORKER = 4  # a run is cut into at least this many shards per worker (load balance)


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to rebuild the run: plain, picklable values."""

    source: str
    destination: str
    model: str  # a model directory or an MLflow URI (a planned run pins the version it resolved)
    overrides: dict[str, Any] = field(default_factory=dict)
    model_uri: str | None = None
    endpoint_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # ArchiveOptions fields
    threads: int = 1  # torch threads of each worker


# The run a worker process rebuilt, set once by the pool's initializer: a process-pool worker
# keeps no other state, and loading and tuning the networks once per process (not per shard)
# is what makes small shards cheap.
_RUN: "ArchiveRun | None" = None


def _start(spec: WorkerSpec, run_id: str) -> None:
    global _RUN
    from nice.device import configure_threads
    from nice.jobs import archive_run

    configure_threads(spec.threads)
    _RUN = archive_run(spec.source, spec.destination, spec.model, spec.overrides, model_uri=spec.model_uri,
                       endpoint_url=spec.endpoint_url, **{**spec.options, "run_id": run_id, "progress": False})


def _shard(index: int) -> int:
    assert _RUN is not None, "worker used before its initializer ran"
    return _RUN.run_shard(index)


def shard_runner(spec: WorkerSpec, workers: int):  # noqa: ANN201 - nice.compress.archive.ShardRunner
    """A ShardRunner for `ArchiveRun.run`: the plan's shards over `workers` processes. The
    first failure stops the rest (shards already committed stay; a rerun resumes the run)."""
    if workers < 2:
        raise ValueError("worker processes: use at least 2 (1 runs the shards in this process)")

    def run(run_id: str, info: "PlanInfo", bar: "tqdm") -> None:
        if not info.shards:
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, info.shards), mp_context=ctx, initializer=_start,
                                 initargs=(spec, run_id)) as pool:
            pending = {pool.submit(_shard, i) for i in range(info.shards)}
            try:
                while pending:
                    done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                    for f in done:
                        bar.update(f.result())  # re-raises a worker's error here
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise

    return run
