"""An archive run's shards in N worker processes on one machine (`nice compress --workers N`).

The run plans in the calling process and holds DST's lease; each worker process rebuilds the
same run from plain arguments (store URIs, the model's path or URI, the overrides), joins
it by its run id (and so its lease), and processes whole shards, as the pipeline's fanned-out
shard pods do: a shard commits its rows and outputs on its own, so the exactly-once and
resume guarantees are the sharded run's. Processes, not threads: the search is Python between
codec and network calls, and two processes on two cores give ~2x where threads do not.
Spawned, not forked: a forked torch or boto3 client is not safe to use.

The pool starts before the plan: while the caller lists the source, each worker imports
torch and torchvision, loads and tunes the networks (~7 s a process), so that start-up
overlaps the listing; the caller is one of the N (it has all of that loaded already).
"""

from __future__ import annotations

import multiprocessing
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
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
    model: str  # a model directory or an MLflow URI
    overrides: dict[str, Any] = field(default_factory=dict)
    model_uri: str | None = None
    endpoint_url: str | None = None
    options: dict[str, Any] = field(default_factory=dict)  # ArchiveOptions fields
    threads: int = 1  # torch threads of each worker


# The run a worker process built and warmed, set once by the pool's initializer: a
# process-pool worker keeps no other state, and loading and tuning the networks once per
# process (not per shard) is what makes small shards cheap.
_RUN: "ArchiveRun | None" = None


def _start(spec: WorkerSpec) -> None:
    global _RUN
    from nice.device import configure_threads
    from nice.jobs import archive_run

    configure_threads(spec.threads)
    _RUN = archive_run(spec.source, spec.destination, spec.model, spec.overrides, model_uri=spec.model_uri,
                       endpoint_url=spec.endpoint_url, **{**spec.options, "progress": False})
    _RUN.compressor  # noqa: B018 - load and tune the networks now, while the caller plans


def _ready() -> bool:
    return _RUN is not None


def _shard(run_id: str, index: int) -> int:
    assert _RUN is not None, "worker used before its initializer ran"
    if _RUN.opts.run_id != run_id:
        _RUN.join(run_id)
    return _RUN.run_shard(index)


class WorkerPool:
    """N-1 spawned, warmed worker processes plus the calling process itself (which has torch
    loaded already: one process start-up less, ~7 s of CPU); `runner` is a ShardRunner for
    `ArchiveRun.run`. Shards are handed out one at a time from one list, to whichever process
    is free. The first failure stops the rest (committed shards stay; a rerun resumes)."""

    def __init__(self, spec: WorkerSpec, workers: int) -> None:
        if workers < 2:
            raise ValueError("worker processes: use at least 2 (1 runs the shards in this process)")
        self.workers = workers
        self.pool = ProcessPoolExecutor(workers - 1, mp_context=multiprocessing.get_context("spawn"),
                                        initializer=_start, initargs=(spec,))
        # One no-op per worker: the executor spawns its processes on demand, so ask for all
        # of them now, to warm up during the plan.
        self._warming = [self.pool.submit(_ready) for _ in range(workers - 1)]

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def runner(self, run: "ArchiveRun", info: "PlanInfo", bar: "tqdm") -> None:
        todo = iter(range(info.shards))
        lock = threading.Lock()
        failed: list[BaseException] = []

        def take() -> int | None:
            with lock:
                return None if failed else next(todo, None)

        def feed() -> None:  # keeps every worker process busy, in a thread of this process
            try:
                for f in self._warming:
                    f.result()
                running = set()
                while True:
                    while len(running) < self.workers - 1 and (i := take()) is not None:
                        running.add(self.pool.submit(_shard, run.run_id, i))
                    if not running:
                        return
                    done, running = wait(running, return_when=FIRST_COMPLETED)  # refill as each finishes
                    for f in done:
                        bar.update(f.result())  # re-raises a worker's error here
            except BaseException as exc:  # noqa: BLE001 - handed to the calling thread
                with lock:
                    failed.append(exc)

        feeder = threading.Thread(target=feed, name="nice-shard-feeder", daemon=True)
        feeder.start()
        try:
            while (i := take()) is not None:
                bar.update(run.run_shard(i))
        except BaseException as exc:
            with lock:
                failed.append(exc)
        feeder.join()
        if failed:
            raise failed[0]
