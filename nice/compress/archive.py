"""Bulk compression of an archive (local folder or S3 prefix) into another store.

Layout at DST (all under `_nice/`, never mixed with outputs):
  runs/<run_id>/manifest.json        run state: running | succeeded, source, config hash
  runs/<run_id>/parts/<shard>-<n>.parquet   rows committed batch by batch
  runs/<run_id>/shards/<shard>.parquet      one file per shard when it completes
  runs/<run_id>/savings.parquet, summary.json   merged table and summary of the run
  index.parquet                      latest row per source key over all successful runs

Exactly-once: an object's output is uploaded *before* its row is committed in a part file.
A killed run leaves at most outputs without rows; the rerun resumes the same run (same id),
skips every key that has a committed row, and re-processes the rest, overwriting those
outputs with identical bytes. Idempotent: an object whose (key, ETag, config hash, model
digest) matches the index is not processed again; an output made by another model (a new
champion) is redone by a full run, and by a `--since-last` run only with
`reprocess="older-models"`, at most `reprocess_limit` objects a run (bounded batches for a
scheduled job); the summary counts the outputs still from older models.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nice.bundle import ModelRef, NiceModel, networks
from nice.compress.engine import Compressor, ItemResult, SourceItem, check_job_config
from nice.compress.outputs import store_output
from nice.compress.savings import SCHEMA, to_table, write_parquet
from nice.config import NiceConfig
from nice.storage import LocalStore, ObjectInfo, Store, label_of

log = logging.getLogger(__name__)
META = "_nice"
RETRYABLE = {"failed"}  # statuses whose objects are tried again by the next run
REPROCESS = ("", "older-models")


@dataclass
class ArchiveOptions:
    shard_size: int = 1000  # target objects per shard
    max_shards: int | None = None  # cap on the fan-out: shards grow past shard_size to stay under it
    batch_size: int = 64
    workers: int = 8  # concurrent downloads / uploads
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


def summarise(rows: list[dict[str, Any]], run_id: str, savings_path: str) -> RunSummary:
    counts = Counter(r["status"] for r in rows)
    src = sum(r["source_bytes"] or 0 for r in rows)
    out = sum(r["output_bytes"] or 0 for r in rows if r["output_bytes"] is not None)
    src_stored = sum(r["source_bytes"] for r in rows if r["output_bytes"] is not None)
    densities = [r["mask_density"] for r in rows if r["status"] == "compressed"]
    labelled = [r for r in rows if r["label"] is not None and r["pred_source"] is not None]
    acc_src = sum(r["pred_source"] == r["label"] for r in labelled) / len(labelled) if labelled else None
    acc_out = sum(r["pred_output"] == r["label"] for r in labelled) / len(labelled) if labelled else None
    flips = sum(1 for r in rows if r["status"] == "compressed" and r["pred_output"] != r["pred_source"])
    return RunSummary(
        run_id=run_id, images=len(rows), counts={s: counts.get(s, 0) for s in
                                                  ("compressed", "kept_original", "skipped", "failed")},
        source_bytes=src, output_bytes=out, bytes_ratio=(out / src_stored) if src_stored else 1.0,
        mean_mask_density=sum(densities) / len(densities) if densities else None,
        accuracy_source=acc_src, accuracy_output=acc_out, prediction_flips=flips,
        savings_path=savings_path)


@dataclass
class Shard:
    index: int
    objects: list[ObjectInfo] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"shard-{self.index:05d}"


def _read_table(store: Store, key: str) -> pa.Table | None:
    try:
        return pq.read_table(io.BytesIO(store.get(key)))
    except FileNotFoundError:
        return None


def _put_table(store: Store, key: str, rows: list[dict[str, Any]], table: pa.Table | None = None) -> None:
    buf = io.BytesIO()
    pq.write_table(table if table is not None else to_table(rows), buf)
    store.put(key, buf.getvalue())


def _objects_table(objects: list[ObjectInfo]) -> pa.Table:
    return pa.table({"key": [o.key for o in objects], "size": [o.size for o in objects],
                     "etag": [o.etag for o in objects]},
                    schema=pa.schema([("key", pa.string()), ("size", pa.int64()), ("etag", pa.string())]))


def _put_json(store: Store, key: str, obj: Any) -> None:
    store.put(key, json.dumps(obj, indent=2, default=str).encode())


def _get_json(store: Store, key: str) -> Any | None:
    try:
        return json.loads(store.get(key))
    except (FileNotFoundError, ValueError):  # missing or half-written: no state to resume
        return None


def list_sources(src: Store, exclude: str | None = None) -> list[ObjectInfo]:
    """Every object under SRC (paginated on S3), sorted by key, metadata folders and keys
    under `exclude` (DST, when it lies inside SRC) left out."""
    return sorted((o for o in src.list() if not o.key.startswith(META + "/")
                   and not (exclude and o.key.startswith(exclude))), key=lambda o: o.key)


def _inside(src: Store, dst: Store) -> str | None:
    """DST's key prefix within SRC when DST lies inside it (its outputs are not sources)."""
    root, inner = src.uri.rstrip("/") + "/", dst.uri.rstrip("/") + "/"
    return inner[len(root):] if inner.startswith(root) else None


def shard_size_for(n_objects: int, target: int, max_shards: int | None = None) -> int:
    """Objects per shard: `target`, grown so that at most `max_shards` shards cover the listing."""
    if target < 1:
        raise ValueError("shard size must be >= 1")
    if max_shards:
        target = max(target, -(-n_objects // max_shards))
    return target


def make_shards(objects: list[ObjectInfo], shard_size: int) -> list[Shard]:
    return [Shard(i // shard_size, objects[i:i + shard_size]) for i in range(0, len(objects), shard_size)]


class ArchiveRun:
    """One run over SRC -> DST; `run()` does everything, `process_shard` is the fan-out unit.

    `model` may be a `ModelRef`: the networks are loaded (and tuned) only when a shard is
    processed, so planning and finishing a fanned-out run never build them."""

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
        self.exclude = _inside(src, dst)
        self.config_hash = self.cfg.hash()
        self.lineage = model.lineage()  # which model makes this run's outputs (nice.lineage)
        self.run_id = self.opts.run_id or self._resumable_run() or (
            datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6])
        self.prefix = f"{META}/runs/{self.run_id}"
        self.class_names = self.opts.class_names or model.class_names
        self._compressor: Compressor | None = None
        self.index = self._load_index()
        self.saved_bytes = 0  # running total for the progress bar

    @property
    def compressor(self) -> Compressor:
        """Built on first use: loading and tuning the networks takes seconds and a plan or
        finish step needs neither."""
        if self._compressor is None:
            self._compressor = Compressor(networks(self.model), self.cfg, run_id=self.run_id,
                                          device=self.opts.device, batch_size=self.opts.batch_size)
        return self._compressor

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

    def _load_index(self) -> dict[str, dict[str, Any]]:
        table = _read_table(self.dst, f"{META}/index.parquet")
        return {r["source_key"]: r for r in table.to_pylist()} if table is not None else {}

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
        if (prev and prev["source_etag"] == obj.etag and prev["config_hash"] == self.config_hash
                and prev["status"] not in RETRYABLE):
            return prev
        return None

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

    def reprocess_batch(self, objects: list[ObjectInfo]) -> set[str]:
        """The older-model outputs this --since-last run redoes: the first `reprocess_limit`
        in key order (the same set in every process of a fanned-out run: the index is read at
        the start and only rewritten by finish)."""
        if not (self.opts.since_last and self.opts.reprocess == "older-models"):
            return set()
        older = [o.key for o in objects if self._from_older_model(o)]
        return set(older[:self.opts.reprocess_limit])

    # -- run --------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Plan, every shard in this process, finish: the whole run on one machine."""
        t0 = time.perf_counter()
        objects = self.plan()
        done = self._committed()
        bar = tqdm(total=len(objects), desc="compress", unit="obj", disable=not self.opts.progress,
                   initial=sum(1 for o in objects if o.key in done))
        reprocess = self.reprocess_batch(objects)
        with ThreadPoolExecutor(self.opts.workers) as pool:
            for shard in make_shards(objects, self.shard_size):
                self.process_shard(shard, done, pool, bar, reprocess)
        bar.close()
        return self.finish(objects, done, t0)

    # The three stages below are also the units a cluster fans out (pipeline `recompress`):
    # plan once, run_shard(i) in parallel workers, finish once.
    def plan(self) -> list[ObjectInfo]:
        """List SRC, record the run as running and its object list; returns the objects."""
        objects = list_sources(self.src, self.exclude)
        self.shard_size = shard_size_for(len(objects), self.opts.shard_size, self.opts.max_shards)
        manifest = _get_json(self.dst, f"{self.prefix}/manifest.json") or {
            "run_id": self.run_id, "source": self.src.uri, "destination": self.dst.uri,
            "config_hash": self.config_hash, "model_uri": self.lineage.uri,
            "model_run_id": self.lineage.run_id, "model_digest": self.lineage.digest,
            "started_at": datetime.now(timezone.utc).isoformat()}
        manifest.update(status="running", objects_listed=len(objects), shard_size=self.shard_size,
                        shards=len(make_shards(objects, self.shard_size)))
        _put_json(self.dst, f"{self.prefix}/manifest.json", manifest)
        _put_table(self.dst, f"{self.prefix}/objects.parquet", [], _objects_table(objects))
        _put_json(self.dst, f"{META}/latest-run.json", {"run_id": self.run_id})
        return objects

    def planned_objects(self) -> list[ObjectInfo]:
        table = _read_table(self.dst, f"{self.prefix}/objects.parquet")
        if table is None:
            raise FileNotFoundError(f"run {self.run_id} has no plan at {self.dst.uri_for(self.prefix)}")
        # Shards are cut as planned, whatever shard size a later step was given.
        manifest = _get_json(self.dst, f"{self.prefix}/manifest.json") or {}
        self.shard_size = int(manifest.get("shard_size") or self.opts.shard_size)
        return [ObjectInfo(r["key"], r["size"], r["etag"]) for r in table.to_pylist()]

    def run_shard(self, index: int) -> int:
        """Process one shard of a planned run (resumable like the whole run); returns its size."""
        shards = make_shards(self.planned_objects(), self.shard_size)
        if not 0 <= index < len(shards):
            raise IndexError(f"run {self.run_id} has {len(shards)} shards, not {index + 1}")
        shard = shards[index]
        done = self._committed(f"{shard.name}-")
        reprocess = self.reprocess_batch([o for s in shards for o in s.objects])
        with ThreadPoolExecutor(self.opts.workers) as pool:
            self.process_shard(shard, done, pool, None, reprocess)
        return len(shard.objects)

    def finish(self, objects: list[ObjectInfo] | None = None, done: dict[str, dict[str, Any]] | None = None,
               t0: float | None = None) -> RunSummary:
        """Merge every committed row, write the summary and mark the run a success."""
        t0 = t0 if t0 is not None else time.perf_counter()
        objects = objects if objects is not None else self.planned_objects()
        done = done if done is not None else self._committed()
        # With --since-last, unchanged objects (and older-model outputs not in this run's
        # batch) get no row on purpose.
        reprocess = self.reprocess_batch(objects)
        missing = [o.key for o in objects if o.key not in done and not self._left_alone(o, reprocess)]
        if missing:
            raise RuntimeError(f"run {self.run_id}: {len(missing)} objects have no row yet "
                               f"(first: {missing[0]}); run their shards before finishing")
        manifest = _get_json(self.dst, f"{self.prefix}/manifest.json") or {}
        rows = self.merge(objects, done)
        summary = summarise(rows, self.run_id, self.dst.uri_for(f"{self.prefix}/savings.parquet"))
        summary.extra["wall_s"] = time.perf_counter() - t0
        summary.extra["processed"] = sum(1 for r in rows if not _carried(r))
        summary.extra["source_read_retries"] = getattr(self.src, "retries", 0)
        summary.extra["model"] = {"uri": self.lineage.uri, "run_id": self.lineage.run_id,
                                  "digest": self.lineage.digest}
        live = {o.key for o in objects}
        redone = sum(1 for r in rows if not _carried(r) and r["source_key"] in self.index
                     and self.index[r["source_key"]].get("model_digest") != self.lineage.digest)
        # Outputs at DST still made by another model (the new index: this run's rows replaced theirs).
        older = sum(1 for k, r in self.new_index.items() if k in live and r["status"] not in RETRYABLE
                    and r.get("model_digest") != self.lineage.digest)
        summary.extra["redone_from_older_models"] = redone
        summary.extra["older_model_outputs"] = older
        _put_json(self.dst, f"{self.prefix}/summary.json", summary.to_dict())
        manifest.update(status="succeeded", finished_at=datetime.now(timezone.utc).isoformat())
        _put_json(self.dst, f"{self.prefix}/manifest.json", manifest)
        _put_json(self.dst, f"{META}/last-success.json", {"run_id": self.run_id})
        return summary

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
        with ThreadPoolExecutor(self.opts.workers) as dl:
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
        return store_output(self.dst, res, meta)

    def _carried_row(self, prev: dict[str, Any]) -> dict[str, Any]:
        row = dict(prev)
        row.update(run_id=self.run_id, status="skipped", error=f"unchanged since run {prev['run_id']}",
                   processed_at=datetime.now(timezone.utc), elapsed_ms=0.0)
        return {k: row.get(k) for k in SCHEMA.names}

    def _write_shard_file(self, shard: Shard, done: dict[str, dict[str, Any]]) -> None:
        rows = [done[o.key] for o in shard.objects if o.key in done]
        _put_table(self.dst, f"{self.prefix}/shards/{shard.name}.parquet", rows)

    def merge(self, objects: list[ObjectInfo], committed: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Merged table of this run from its committed rows (held in memory since the start)."""
        order = {o.key: i for i, o in enumerate(objects)}
        rows = sorted(committed.values(), key=lambda r: order.get(r["source_key"], len(order)))
        _put_table(self.dst, f"{self.prefix}/savings.parquet", rows)
        if self.opts.savings:
            write_parquet(rows, self.opts.savings)
        index = dict(self.index)
        for r in rows:
            if not _carried(r):
                index[r["source_key"]] = r
        live = set(order)
        self.new_index = {k: r for k, r in index.items() if k in live}
        _put_table(self.dst, f"{META}/index.parquet", [r for _, r in sorted(self.new_index.items())])
        return rows


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
