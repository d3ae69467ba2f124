"""Bulk compression of an archive (local folder or S3 prefix) into another store.

Layout at DST (all under `_nice/`, never mixed with outputs):
  lease/<generation>.json            who may write here now (nice.compress.lease)
  runs/<run_id>/manifest.json        run state: running | succeeded, source, config hash, plan size
  runs/<run_id>/objects/<n>.parquet  the planned listing in chunks (nice.compress.listing)
  runs/<run_id>/collisions.json, reprocess.json   output names taken by other sources; the
                                     --reprocess batch, both decided by the plan
  runs/<run_id>/parts/<shard>-<n>.parquet   rows committed batch by batch
  runs/<run_id>/shards/<shard>.parquet      one file per shard when it completes
  runs/<run_id>/savings.parquet, summary.json   merged table and summary of the run
  index/manifest.json, index/p-*.parquet     latest row per source key, partitioned by key
                                     range (nice.compress.index)

One writer: every run holds DST's lease; the steps of one fanned-out run share it.
Exactly-once: an object's output is uploaded *before* its row is committed in a part file.
A killed run leaves at most outputs without rows; the rerun resumes the same run (same id,
same plan), skips every key that has a committed row, and re-processes the rest, overwriting
those outputs with identical bytes. Idempotent: an object whose (key, ETag, config hash, model
digest) matches the index is not processed again; an output made by another model (a new
champion) is redone by a full run, and by a `--since-last` run only with
`reprocess="older-models"`, at most `reprocess_limit` objects a run (bounded batches for a
scheduled job); the summary counts the outputs still from older models.

Memory: no step holds the listing, the index or the run's rows; a shard holds its own
objects, their index rows and one index partition, and the finish one shard at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nice.bundle import ModelRef, NiceModel, networks
from nice.compress.engine import Compressor, ItemResult, SourceItem, check_job_config
from nice.compress.index import DECISION, RETRYABLE, ArchiveIndex, IndexWriter
from nice.compress.lease import DEFAULT_TTL, Lease, LeaseRecord
from nice.compress.listing import (
    OBJECT_CHUNK,
    CollisionFinder,
    PlanWriter,
    iter_sources,
    read_rows,
)
from nice.compress.outputs import store_output
from nice.compress.savings import SCHEMA, to_table
from nice.config import NiceConfig
from nice.storage import LocalStore, ObjectInfo, Store, label_of

log = logging.getLogger(__name__)
META = "_nice"
REPROCESS = ("", "older-models")


@dataclass
class ArchiveOptions:
    shard_size: int = 1000  # target objects per shard
    max_shards: int | None = None  # cap on the fan-out: shards grow past shard_size to stay under it
    # Floor on the fan-out (worker processes): shards shrink below shard_size (to MIN_SHARD
    # objects at least) so that every worker has several to take, and they finish together.
    min_shards: int | None = None
    batch_size: int = 64
    io_threads: int = 8  # concurrent downloads / uploads per process
    since_last: bool = False  # rows only for new or changed objects
    savings: str | None = None  # also write the merged table to this local path
    device: str = "cpu"
    progress: bool = True
    label_from_dir: bool = True  # `class_name/file` keys give labels when the model knows the class
    class_names: list[str] | None = None  # label folders by these names instead of the model's
    run_id: str | None = None
    # With since_last: also redo outputs made by another model ("older-models"), at most
    # `reprocess_limit` a run, in key order (so every shard of a fanned-out run agrees).
    reprocess: str = ""
    reprocess_limit: int = 5000
    # DST's lease: held by another run -> LeaseHeld, or queue behind it with `wait`; a lease
    # not renewed for `lease_seconds` is stale and taken over (the takeover resumes the run).
    wait: bool = False
    lease_seconds: float = DEFAULT_TTL


@dataclass
class RunSummary:
    run_id: str
    images: int
    counts: dict[str, int]
    source_bytes: int
    output_bytes: int
    bytes_ratio: float
    mean_mask_density: float | None
    accuracy_source: float | None
    accuracy_output: float | None
    prediction_flips: int
    savings_path: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SummaryTotals:
    """A run summary's sums, added to shard by shard (the run's rows are never all in memory)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.images = self.source_bytes = self.output_bytes = self.source_stored = 0
        self.density_sum, self.densities = 0.0, 0
        self.labelled = self.right_source = self.right_output = self.flips = self.processed = 0

    def add(self, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self.images += 1
            self.counts[r["status"]] += 1
            self.source_bytes += r["source_bytes"] or 0
            if r["output_bytes"] is not None:
                self.output_bytes += r["output_bytes"]
                self.source_stored += r["source_bytes"]
            if r["status"] == "compressed":
                self.density_sum += r["mask_density"]
                self.densities += 1
                self.flips += r["pred_output"] != r["pred_source"]
            if r["label"] is not None and r["pred_source"] is not None:
                self.labelled += 1
                self.right_source += r["pred_source"] == r["label"]
                self.right_output += r["pred_output"] == r["label"]
            self.processed += not _carried(r)

    def summary(self, run_id: str, savings_path: str) -> RunSummary:
        n = self.labelled
        return RunSummary(
            run_id=run_id, images=self.images,
            counts={s: self.counts.get(s, 0) for s in ("compressed", "kept_original", "skipped", "failed")},
            source_bytes=self.source_bytes, output_bytes=self.output_bytes,
            bytes_ratio=(self.output_bytes / self.source_stored) if self.source_stored else 1.0,
            mean_mask_density=self.density_sum / self.densities if self.densities else None,
            accuracy_source=self.right_source / n if n else None, accuracy_output=self.right_output / n if n else None,
            prediction_flips=self.flips, savings_path=savings_path)


@dataclass
class Shard:
    index: int
    objects: list[ObjectInfo] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


@dataclass
class PlanInfo:
    """What a plan recorded: the listing's size and how it is cut (the shards themselves stay at DST)."""
    objects: int
    shard_size: int

    @property
    def shards(self) -> int:
        return -(-self.objects // self.shard_size) if self.objects else 0


def _read_table(store: Store, key: str) -> pa.Table | None:
    try:
        return pq.read_table(io.BytesIO(store.get(key)))
    except FileNotFoundError:
        return None


def _put_table(store: Store, key: str, rows: list[dict[str, Any]], table: pa.Table | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table if table is not None else to_table(rows), buf)
    store.put(key, buf.getvalue())


def _put_json(store: Store, key: str, obj: Any) -> None:
    store.put(key, json.dumps(obj, indent=2, default=str).encode())


def _get_json(store: Store, key: str) -> Any | None:
    try:
        return json.loads(store.get(key))
    except (FileNotFoundError, ValueError):  # missing or half-written: no state to resume
        return None


def list_sources(src: Store, exclude: str | None = None) -> list[ObjectInfo]:
    """Every object under SRC (paginated on S3), sorted by key, metadata folders and keys
    under `exclude` (DST, when it lies inside SRC) left out. Held in memory: for a sample or a
    small listing; archive runs stream it (`nice.compress.listing.iter_sources`)."""
    return list(iter_sources(src, exclude))


def _inside(src: Store, dst: Store) -> str | None:
    """DST's key prefix within SRC when DST lies inside it (its outputs are not sources)."""
    root, inner = src.uri.rstrip("/") + "/", dst.uri.rstrip("/") + "/"
    return inner[len(root):] if inner.startswith(root) else None


MIN_SHARD = 32  # smallest shard `min_shards` cuts: each shard commits a part and its rows


def shard_size_for(n_objects: int, target: int, max_shards: int | None = None,
                   min_shards: int | None = None) -> int:
    """Objects per shard: `target`, shrunk so that at least `min_shards` shards cover the
    listing (not below MIN_SHARD), then grown so that at most `max_shards` do."""
    if target < 1:
        raise ValueError("shard size must be >= 1")
    if min_shards:
        target = min(target, max(MIN_SHARD, -(-n_objects // min_shards)))
    if max_shards:
        target = max(target, -(-n_objects // max_shards))
    return target


# Runs a planned run's shards another way: (the run, its plan, the progress bar) -> None.
ShardRunner = Callable[["ArchiveRun", PlanInfo, tqdm], None]


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


class ArchiveRun:
    """One run over SRC -> DST; `run()` does everything, `plan` / `run_shard` / `finish` are the
    fan-out's steps.

    `model` may be a `ModelRef`: the networks are loaded (and tuned) only when a shard is
    processed, so planning and finishing a fanned-out run never build them. Every step holds
    DST's lease (nice.compress.lease): `run()` takes it, so a second run on the same DST stops
    with LeaseHeld (or waits); the steps of a run with an explicit `run_id` join it."""

    def __init__(self, src: Store, dst: Store, model: NiceModel | ModelRef, cfg: NiceConfig | None = None,
                 opts: ArchiveOptions | None = None) -> None:
        if src.uri.rstrip("/") == dst.uri.rstrip("/"):
            raise ValueError("DST must differ from SRC: sources are never modified")
        if isinstance(src, LocalStore) and not src.root.is_dir():
            raise NotADirectoryError(f"source folder {src.root} does not exist")
        self.src, self.dst, self.model = src, dst, model
        self.cfg = cfg or model.config
        check_job_config(self.cfg, model.config)  # here too, so that a plan fails before any shard runs
        # A copy: the caller's options are never changed (the planned shard size lives here).
        self.opts = dataclasses.replace(opts) if opts else ArchiveOptions()
        self.shard_size = self.opts.shard_size
        if self.opts.reprocess not in REPROCESS:
            raise ValueError(f"reprocess must be one of {REPROCESS[1:]}, got {self.opts.reprocess!r}")
        if self.opts.reprocess_limit < 0:
            raise ValueError("reprocess_limit must be >= 0")
        if self.opts.lease_seconds <= 0:
            raise ValueError("the lease time must be > 0 seconds")
        self.exclude = _inside(src, dst)
        self.config_hash = self.cfg.hash()
        self.lineage = model.lineage()  # which model makes this run's outputs (nice.lineage)
        # Provisional without an explicit id: a resumed id is decided again once the lease is
        # held; a new one is kept, so the lease names the run's real id from its first write
        # (a run refused in between would otherwise name an id that never exists).
        resumable = None if self.opts.run_id else self._resumable_run()
        self._new_id = not self.opts.run_id and resumable is None
        self._set_run_id(self.opts.run_id or resumable or _new_run_id())
        self.class_names = self.opts.class_names or model.class_names
        self._compressor: Compressor | None = None
        self.index: dict[str, dict[str, Any]] = {}  # index rows of the shard being processed
        self.lease: Lease | None = None
        self._plan: PlanInfo | None = None
        self._taken: dict[str, str] | None = None
        self._reprocess: set[str] | None = None
        self._index_view: ArchiveIndex | None = None
        self._chunk: dict[str, Any] = {}  # the last listing chunk read (nice.compress.listing.read_rows)
        self._waited_at = 0.0
        self.saved_bytes = 0  # running total for the progress bar

    def _set_run_id(self, run_id: str) -> None:
        self.run_id = run_id
        self.prefix = f"{META}/runs/{run_id}"

    def join(self, run_id: str) -> None:
        """Become a step of run `run_id` (a worker process built and warmed this object before
        the run was planned): its id, its lease, and the model its plan recorded."""
        manifest = _get_json(self.dst, f"{META}/runs/{run_id}/manifest.json") or {}
        planned = manifest.get("model_digest")
        if planned and planned != self.lineage.digest:
            raise ValueError(f"run {run_id} was planned with model {manifest.get('model_uri')} ({planned[:12]}), "
                             f"this process loaded {self.lineage.uri} ({self.lineage.digest[:12]}): run it again")
        self.opts.run_id = run_id
        self._set_run_id(run_id)
        self._plan = self._taken = self._reprocess = self._index_view = None  # read again for this run
        self._chunk = {}
        if self._compressor is not None:
            self._compressor.run_id = run_id

    @property
    def compressor(self) -> Compressor:
        """Built on first use: loading and tuning the networks takes seconds and a plan or
        finish step needs neither."""
        if self._compressor is None:
            self._compressor = Compressor(networks(self.model), self.cfg, run_id=self.run_id,
                                          device=self.opts.device, batch_size=self.opts.batch_size)
        return self._compressor

    # -- the lease ------------------------------------------------------------------------
    @contextlib.contextmanager
    def holding_lease(self, release: bool) -> Iterator[None]:
        """Hold DST's lease for the block (already held: nothing to do). A run without an
        explicit id picks it (resume or new) under the lease, so that a run which waited does
        not resume a run its predecessor finished. Released at the end when `release`, and on
        any error of a whole run (a killed process leaves it to go stale instead)."""
        if self.lease is not None:
            yield
            return
        joined = self.opts.run_id is not None
        lease = Lease(self.dst, self.run_id, ttl=self.opts.lease_seconds)
        lease.acquire(wait=self.opts.wait, join=joined, on_wait=self._waiting)
        self.lease = lease
        if not joined:
            fresh, self._new_id = self._new_id, False  # the provisional new id serves one run
            self._set_run_id(self._resumable_run() or (self.run_id if fresh else _new_run_id()))
            lease.set_run(self.run_id)
        lease.start_renewing()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            self.lease = None
            if release or (failed and not joined):
                lease.release()
            else:
                lease.stop_renewing()

    def _waiting(self, rec: LeaseRecord) -> None:
        now = time.time()
        if self.opts.progress and now - self._waited_at >= 30:
            self._waited_at = now
            print(f"waiting for {self.dst.uri}: held by archive run {rec.run_id} ({rec.holder}, renewed "
                  f"{now - rec.renewed_at:.0f} s ago)", file=sys.stderr, flush=True)

    def _check_lease(self) -> None:
        if self.lease is not None:
            self.lease.check()

    # -- state ----------------------------------------------------------------------
    def _resumable_run(self) -> str | None:
        """The newest run for the same source and config that never finished."""
        latest = _get_json(self.dst, f"{META}/latest-run.json")
        if not latest:
            return None
        manifest = _get_json(self.dst, f"{META}/runs/{latest['run_id']}/manifest.json") or {}
        if (manifest.get("status") == "running" and manifest.get("source") == self.src.uri
                and manifest.get("config_hash") == self.config_hash
                and manifest.get("model_digest", self.lineage.digest) == self.lineage.digest):
            log.info("resuming interrupted run %s", latest["run_id"])
            return str(latest["run_id"])
        return None

    def _committed(self, shard_prefix: str = "") -> dict[str, dict[str, Any]]:
        """Rows already committed by this run (when resuming), for all shards or one."""
        rows: dict[str, dict[str, Any]] = {}
        for info in self.dst.list(f"{self.prefix}/parts/{shard_prefix}"):
            table = _read_table(self.dst, info.key)
            if table is not None:
                for r in table.to_pylist():
                    rows[r["source_key"]] = r
        return rows

    def _previous(self, obj: ObjectInfo) -> dict[str, Any] | None:
        """The index row of an object whose source and config are unchanged (any model)."""
        prev = self.index.get(obj.key)
        return prev if _same_source(prev, obj, self.config_hash) else None

    def _is_unchanged(self, obj: ObjectInfo) -> dict[str, Any] | None:
        """Done already: same source, config and model."""
        prev = self._previous(obj)
        return prev if prev is not None and prev.get("model_digest") == self.lineage.digest else None

    def _from_older_model(self, obj: ObjectInfo) -> bool:
        prev = self._previous(obj)
        return prev is not None and prev.get("model_digest") != self.lineage.digest

    def _left_alone(self, obj: ObjectInfo, reprocess: set[str]) -> bool:
        """No row in this run on purpose: a --since-last run leaves unchanged objects alone, and
        outputs of older models unless they are among this run's `reprocess` batch."""
        if not self.opts.since_last:
            return False
        return self._is_unchanged(obj) is not None or (self._from_older_model(obj) and obj.key not in reprocess)

    def reprocess_batch(self) -> set[str]:
        """The older-model outputs this --since-last run redoes: the first `reprocess_limit`
        in key order, chosen once by the plan (runs/<id>/reprocess.json) and read by every
        later step, so every shard and the finish of a fanned-out run agree."""
        if not (self.opts.since_last and self.opts.reprocess == "older-models"):
            return set()
        if self._reprocess is None:
            self._reprocess = set((_get_json(self.dst, f"{self.prefix}/reprocess.json") or {}).get("keys", []))
        return self._reprocess

    def _taken_names(self) -> dict[str, str]:
        """Output names that belong to another source (the plan's collisions.json)."""
        if self._taken is None:
            self._taken = _get_json(self.dst, f"{self.prefix}/collisions.json") or {}
        return self._taken

    # -- run --------------------------------------------------------------------------
    def run(self, shards: ShardRunner | None = None) -> RunSummary:
        """Plan, every shard, finish: the whole run on one machine. The shards run in this
        process, or through `shards` (nice.compress.workers: worker processes that join this
        run and its lease, and this process), which is given the run, the plan and the bar."""
        t0 = time.perf_counter()
        with self.holding_lease(release=True):
            info = self.plan()
            bar = tqdm(total=info.objects, desc="compress", unit="obj", disable=not self.opts.progress)
            if shards is not None:
                shards(self, info, bar)
            else:
                with ThreadPoolExecutor(self.opts.io_threads) as pool:
                    for i in range(info.shards):
                        self._run_shard(i, pool, bar)
            bar.close()
            return self.finish(t0=t0)

    # The three stages below are also the units a cluster fans out (pipeline `recompress`):
    # plan once, run_shard(i) in parallel workers, finish once.
    def plan(self) -> PlanInfo:
        """List SRC into the run's plan at DST (a stream: one chunk in memory at a time), record
        the run as running; a run that resumes keeps its plan, so its shards stay the same."""
        with self.holding_lease(release=False):
            manifest = _get_json(self.dst, f"{self.prefix}/manifest.json")
            if manifest and manifest.get("planned") and manifest.get("status") == "running":
                self._plan = PlanInfo(int(manifest["objects_listed"]), int(manifest["shard_size"]))
                self.shard_size = self._plan.shard_size
                _put_json(self.dst, f"{META}/latest-run.json", {"run_id": self.run_id})
                return self._plan
            manifest = manifest or {
                "run_id": self.run_id, "source": self.src.uri, "destination": self.dst.uri,
                "config_hash": self.config_hash, "model_uri": self.lineage.uri,
                "model_run_id": self.lineage.run_id, "model_digest": self.lineage.digest,
                "started_at": datetime.now(timezone.utc).isoformat()}
            manifest.update(status="running", planned=False)
            _put_json(self.dst, f"{self.prefix}/manifest.json", manifest)
            _put_json(self.dst, f"{META}/latest-run.json", {"run_id": self.run_id})
            writer, collisions = PlanWriter(self.dst, self.prefix), CollisionFinder()
            older = _OlderModels(self) if self.opts.since_last and self.opts.reprocess == "older-models" else None
            bar = tqdm(desc="list", unit="obj", disable=not self.opts.progress)
            for obj in iter_sources(self.src, self.exclude):
                writer.add(obj)
                collisions.add(obj.key)
                if older is not None:
                    older.add(obj)
                bar.update()
                if writer.count % OBJECT_CHUNK == 0:
                    self._check_lease()
            bar.close()
            writer.close()
            self.shard_size = shard_size_for(writer.count, self.opts.shard_size, self.opts.max_shards,
                                             self.opts.min_shards)
            self._plan = PlanInfo(writer.count, self.shard_size)
            _put_json(self.dst, f"{self.prefix}/collisions.json", collisions.taken)
            if older is not None:
                _put_json(self.dst, f"{self.prefix}/reprocess.json", {"keys": older.keys})
            manifest.update(planned=True, objects_listed=writer.count, object_chunks=writer.chunks,
                            shard_size=self.shard_size, shards=self._plan.shards)
            _put_json(self.dst, f"{self.prefix}/manifest.json", manifest)
            return self._plan

    def planned(self) -> PlanInfo:
        """The plan recorded at DST (shards are cut as planned, whatever shard size a later
        step was given)."""
        if self._plan is None:
            manifest = _get_json(self.dst, f"{self.prefix}/manifest.json") or {}
            if not manifest.get("planned"):
                raise FileNotFoundError(f"run {self.run_id} has no plan at {self.dst.uri_for(self.prefix)}")
            self._plan = PlanInfo(int(manifest["objects_listed"]), int(manifest["shard_size"]))
            self.shard_size = self._plan.shard_size
        return self._plan

    def shard(self, index: int) -> Shard:
        info = self.planned()
        if not 0 <= index < info.shards:
            raise IndexError(f"run {self.run_id} has {info.shards} shards, not {index + 1}")
        start = index * info.shard_size
        return Shard(index, read_rows(self.dst, self.prefix, start, min(start + info.shard_size, info.objects),
                                      self._chunk))

    def planned_objects(self) -> list[ObjectInfo]:
        """The whole planned listing (in memory: for small runs and tests)."""
        info = self.planned()
        return read_rows(self.dst, self.prefix, 0, info.objects)

    def run_shard(self, index: int) -> int:
        """Process one shard of a planned run (resumable like the whole run); returns its size."""
        with self.holding_lease(release=False), ThreadPoolExecutor(self.opts.io_threads) as pool:
            return self._run_shard(index, pool, None)

    def _run_shard(self, index: int, pool: ThreadPoolExecutor, bar: tqdm | None) -> int:
        shard = self.shard(index)
        done = self._committed(f"{shard.name}-")
        if bar is not None:
            bar.update(sum(1 for o in shard.objects if o.key in done))
        self.index = self._archive_index().rows_for([o.key for o in shard.objects])
        self.process_shard(shard, done, pool, bar, self.reprocess_batch())
        return len(shard.objects)

    def _archive_index(self) -> ArchiveIndex:
        """The index as the run found it (only this run's finish rewrites it)."""
        if self._index_view is None:
            self._index_view = ArchiveIndex(self.dst)
        return self._index_view

    def finish(self, t0: float | None = None) -> RunSummary:
        """Merge every committed row, shard by shard (the merged table and the new index are
        written as streams), write the summary, mark the run a success and release the lease."""
        t0 = t0 if t0 is not None else time.perf_counter()
        with self.holding_lease(release=True):
            info = self.planned()
            manifest = _get_json(self.dst, f"{self.prefix}/manifest.json") or {}
            reprocess = self.reprocess_batch()
            writer = IndexWriter(self._archive_index(), self.run_id, self.lineage.digest)
            totals = SummaryTotals()
            savings_key = f"{self.prefix}/savings.parquet"
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "savings.parquet"
                with pq.ParquetWriter(local, SCHEMA) as out:
                    for i in tqdm(range(info.shards), desc="merge", unit="shard", disable=not self.opts.progress):
                        rows = self._merge_shard(self.shard(i), reprocess, writer)
                        if rows:
                            out.write_table(to_table(rows))
                        totals.add(rows)
                        self._check_lease()
                self._check_lease()
                writer.close()
                self.dst.put_file(savings_key, local)
                if self.opts.savings:
                    Path(self.opts.savings).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(local, self.opts.savings)
            summary = totals.summary(self.run_id, self.dst.uri_for(savings_key))
            summary.extra["wall_s"] = time.perf_counter() - t0
            summary.extra["processed"] = totals.processed
            summary.extra["source_read_retries"] = getattr(self.src, "retries", 0)
            summary.extra["model"] = {"uri": self.lineage.uri, "run_id": self.lineage.run_id,
                                      "digest": self.lineage.digest}
            summary.extra["redone_from_older_models"] = writer.redone_from_older_models
            # Outputs at DST still made by another model (the new index: this run's rows replaced theirs).
            summary.extra["older_model_outputs"] = writer.older_outputs()
            _put_json(self.dst, f"{self.prefix}/summary.json", summary.to_dict())
            manifest.update(status="succeeded", finished_at=datetime.now(timezone.utc).isoformat())
            _put_json(self.dst, f"{self.prefix}/manifest.json", manifest)
            _put_json(self.dst, f"{META}/last-success.json", {"run_id": self.run_id})
            return summary

    def _merge_shard(self, shard: Shard, reprocess: set[str], writer: IndexWriter) -> list[dict[str, Any]]:
        """One shard's rows in listing order, fed to the new index; refuses to finish while
        an object has no row (unless a --since-last run leaves it alone on purpose)."""
        done = self._committed(f"{shard.name}-")
        self.index = (self._archive_index().rows_for([o.key for o in shard.objects], DECISION)
                      if self.opts.since_last else {})  # only deciding what was left alone
        rows = []
        for o in shard.objects:
            r = done.get(o.key)
            if r is None:
                if not self._left_alone(o, reprocess):
                    writer.abort()
                    raise RuntimeError(f"run {self.run_id}: objects of {shard.name} have no row yet "
                                       f"(first: {o.key}); run their shards before finishing")
                writer.add(o.key, None)
                continue
            rows.append(r)
            writer.add(o.key, None if _carried(r) else r)
        return rows

    def process_shard(self, shard: Shard, done: dict[str, dict[str, Any]], pool: ThreadPoolExecutor,
                      bar: tqdm | None = None, reprocess: set[str] | None = None) -> None:
        todo = [o for o in shard.objects if o.key not in done]
        part = sum(1 for _ in self.dst.list(f"{self.prefix}/parts/{shard.name}-"))
        carried: list[dict[str, Any]] = []
        work: list[ObjectInfo] = []
        for obj in todo:
            prev = self._is_unchanged(obj)
            if self._left_alone(obj, reprocess or set()):
                continue
            if prev is None:
                work.append(obj)
            else:
                carried.append(self._carried_row(prev))
        if carried:
            self._check_lease()
            _put_table(self.dst, f"{self.prefix}/parts/{shard.name}-{part:05d}.parquet", carried)
            part += 1
            for r in carried:
                done[r["source_key"]] = r
        if bar is not None:
            bar.update(len(todo) - len(work))
        bs = self.opts.batch_size
        batches = [work[i:i + bs] for i in range(0, len(work), bs)]
        # Prefetch the next batch's bytes while this one is on the CPU.
        pending = pool.submit(self._download, batches[0]) if batches else None
        for i, batch in enumerate(batches):
            items = pending.result() if pending else []
            pending = pool.submit(self._download, batches[i + 1]) if i + 1 < len(batches) else None
            rows = self._compress_and_upload(items, pool)
            self._check_lease()  # a run that lost DST's lease commits nothing more
            _put_table(self.dst, f"{self.prefix}/parts/{shard.name}-{part:05d}.parquet", rows)  # commit
            part += 1
            for r in rows:
                done[r["source_key"]] = r
                self.saved_bytes += r["saved_bytes"] or 0
            if bar is not None:
                bar.update(len(batch))
                bar.set_postfix(saved=f"{self.saved_bytes / 1e6:.1f}MB")
        self._write_shard_file(shard, done)

    # -- pieces -----------------------------------------------------------------------
    def _download(self, batch: list[ObjectInfo]) -> list[tuple[ObjectInfo, bytes | Exception]]:
        def fetch(obj: ObjectInfo) -> tuple[ObjectInfo, bytes | Exception]:
            try:
                return obj, self.src.get(obj.key)
            except Exception as exc:  # noqa: BLE001 - becomes a failed row with the reason
                return obj, exc
        # Downloads run on their own short-lived pool so a prefetch never waits on itself.
        with ThreadPoolExecutor(self.opts.io_threads) as dl:
            return list(dl.map(fetch, batch))

    def _compress_and_upload(self, fetched: list[tuple[ObjectInfo, bytes | Exception]],
                             pool: ThreadPoolExecutor) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        items: list[SourceItem] = []
        for obj, data in fetched:
            label = label_of(obj.key, self.class_names) if self.opts.label_from_dir else None
            item = SourceItem(uri=self.src.uri_for(obj.key), key=obj.key, etag=obj.etag, label=label,
                              data=b"" if isinstance(data, Exception) else data)
            if isinstance(data, Exception):
                row = self.compressor.rejected(item, "failed", f"download failed: {type(data).__name__}: {data}").row
                rows.append({**row, "source_bytes": obj.size})
                continue
            items.append(item)
        uploads = [pool.submit(self._upload, res) for res in self.compressor.compress(items)]
        return rows + [fut.result() for fut in uploads]

    def _upload(self, res: ItemResult) -> dict[str, Any]:
        meta = {"nice-source-etag": res.row["source_etag"], "nice-config-hash": self.config_hash,
                "nice-run-id": self.run_id, "nice-status": res.row["status"], **self.lineage.metadata()}
        return store_output(self.dst, res, meta, taken=self._taken_names())

    def _carried_row(self, prev: dict[str, Any]) -> dict[str, Any]:
        row = dict(prev)
        row.update(run_id=self.run_id, status="skipped", error=f"unchanged since run {prev['run_id']}",
                   processed_at=datetime.now(timezone.utc), elapsed_ms=0.0)
        return {k: row.get(k) for k in SCHEMA.names}

    def _write_shard_file(self, shard: Shard, done: dict[str, dict[str, Any]]) -> None:
        rows = [done[o.key] for o in shard.objects if o.key in done]
        _put_table(self.dst, f"{self.prefix}/shards/{shard.name}.parquet", rows)


def _same_source(prev: dict[str, Any] | None, obj: ObjectInfo, config_hash: str) -> bool:
    return bool(prev and prev["source_etag"] == obj.etag and prev["config_hash"] == config_hash
                and prev["status"] not in RETRYABLE)


class _OlderModels:
    """The plan's choice of this run's reprocess batch: the first `reprocess_limit` listed
    objects (key order) whose indexed output an older model made, found by walking the
    listing and the index side by side (one index partition in memory at a time)."""

    def __init__(self, run: ArchiveRun) -> None:
        self.limit, self.config_hash, self.digest = run.opts.reprocess_limit, run.config_hash, run.lineage.digest
        self.keys: list[str] = []
        self._rows = run._archive_index().iter_rows(DECISION)
        self._row: dict[str, Any] | None = next(self._rows, None)

    def add(self, obj: ObjectInfo) -> None:
        if len(self.keys) >= self.limit:
            return
        while self._row is not None and self._row["source_key"] < obj.key:
            self._row = next(self._rows, None)
        if (self._row is not None and self._row["source_key"] == obj.key
                and _same_source(self._row, obj, self.config_hash) and self._row.get("model_digest") != self.digest):
            self.keys.append(obj.key)


def _carried(row: dict[str, Any]) -> bool:
    return row["status"] == "skipped" and (row["error"] or "").startswith("unchanged since")


def dry_run(src: Store, model: NiceModel, cfg: NiceConfig | None = None, sample: int = 200,
            seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """Estimate savings on a random sample without writing anything."""
    import random

    objects = list_sources(src)
    picked = random.Random(seed).sample(objects, min(sample, len(objects)))
    compressor = Compressor(model, cfg or model.config, run_id="dry-run", batch_size=batch_size)
    t0 = time.perf_counter()
    rows = [r.row for r in compressor.compress(
        [SourceItem(uri=src.uri_for(o.key), key=o.key, data=src.get(o.key), etag=o.etag) for o in picked])]
    elapsed = time.perf_counter() - t0
    stored = [r for r in rows if r["output_bytes"] is not None or r["status"] == "kept_original"]
    src_bytes = sum(r["source_bytes"] for r in stored)
    out_bytes = sum(r["output_bytes"] or r["source_bytes"] for r in stored)
    ratio = out_bytes / src_bytes if src_bytes else 1.0
    total = sum(o.size for o in objects)
    return {"objects": len(objects), "sampled": len(picked), "total_bytes": total,
            "sample_ratio": ratio, "estimated_output_bytes": int(total * ratio),
            "estimated_saved_bytes": int(total * (1 - ratio)),
            "sample_counts": {s: sum(r["status"] == s for r in rows) for s in
                              ("compressed", "kept_original", "skipped", "failed")},
            "sample_images_per_s": len(picked) / elapsed if elapsed else None}
