"""Build a Dataset artifact from a source: validate every file once, drop duplicates, split
(stratified, seeded), write Parquet shards, and fingerprint the content.

Two passes keep memory flat: pass 1 validates and appends admitted files to staging Parquet
files while keeping only small metadata; splits are then assigned from the metadata; pass 2
streams the staging files into the split shards.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from nice.imageio import ImageRejected, decode_image
from nice.ingest.artifact import FORMAT, SHARD_SCHEMA, DatasetArtifact
from nice.ingest.sources import open_source

REJECT_SCHEMA = pa.schema([("key", pa.string()), ("status", pa.string()), ("reason", pa.string()),
                           ("bytes", pa.int64())])
DUP_SCHEMA = pa.schema([("key", pa.string()), ("duplicate_of", pa.string()), ("sha256", pa.string())])


@dataclass
class IngestOptions:
    val_fraction: float = 0.1
    test_fraction: float = 0.1  # for sources without an official test split
    seed: int = 0
    size: int = 64  # mnist-m image size
    limit: int | None = None  # per official split, for builtin sources
    shard_rows: int = 5000
    max_pixels: int = 40_000_000
    endpoint_url: str | None = None
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class _Writer:
    """Appends rows to numbered Parquet files of at most `rows` rows each."""

    def __init__(self, directory: Path, rows: int, schema: pa.Schema) -> None:
        self.dir, self.rows, self.schema = directory, rows, schema
        self.buf: list[dict[str, Any]] = []
        self.files: list[Path] = []

    def add(self, row: dict[str, Any]) -> None:
        self.buf.append(row)
        if len(self.buf) >= self.rows:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"part-{len(self.files):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(self.buf, schema=self.schema), path)
        self.files.append(path)
        self.buf = []


def _assign_splits(meta: list[dict[str, Any]], opts: IngestOptions) -> None:
    """Stratified by class and seeded; official test (and val) splits are kept, val otherwise
    comes from train."""
    rng = random.Random(opts.seed)
    by_class: dict[tuple[str, bool], list[dict[str, Any]]] = defaultdict(list)
    official_val = any(m["official"] == "val" for m in meta)
    for m in meta:
        if m["official"] in ("test", "val"):
            m["split"] = m["official"]
        else:
            by_class[(m["label_name"], m["official"] == "train")].append(m)
    for (_, official_train), items in sorted(by_class.items()):
        items.sort(key=lambda m: m["key"])
        rng.shuffle(items)
        n = len(items)
        n_test = 0 if official_train else round(n * opts.test_fraction)
        n_val = 0 if official_val and official_train else round(n * opts.val_fraction)
        if n >= 3 and not official_train:  # small classes still appear in every requested split
            n_test = max(n_test, 1) if opts.test_fraction > 0 else 0
            n_val = max(n_val, 1) if opts.val_fraction > 0 else 0
        for i, m in enumerate(items):
            m["split"] = "test" if i < n_test else "val" if i < n_test + n_val else "train"


def content_hash(meta: list[dict[str, Any]], class_names: list[str]) -> str:
    h = hashlib.sha256(json.dumps(class_names).encode())
    for m in sorted(meta, key=lambda m: (m["split"], m["sha256"])):
        h.update(f"{m['split']}\t{m['label_name']}\t{m['sha256']}\n".encode())
    return h.hexdigest()


def ingest(source: str, out: str | Path, opts: IngestOptions | None = None) -> DatasetArtifact:
    opts = opts or IngestOptions()
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    staging = out / "_staging"
    name, records = open_source(source, opts.limit, opts.size, opts.seed, opts.endpoint_url)
    stage = _Writer(staging, 2000, SHARD_SCHEMA)
    rejects = _Writer(out / "_rejects", 100_000, REJECT_SCHEMA)
    dups = _Writer(out / "_dups", 100_000, DUP_SCHEMA)
    seen: dict[str, str] = {}
    meta: list[dict[str, Any]] = []
    modes: set[str] = set()
    for rec in tqdm(records, desc=f"ingest {name}", unit="img", disable=not opts.progress):
        if rec.split and rec.split.startswith("error:"):
            rejects.add({"key": rec.key, "status": "failed", "reason": rec.split[6:], "bytes": 0})
            continue
        if not rec.label:
            rejects.add({"key": rec.key, "status": "skipped", "reason": "no class folder (expected class_name/file)",
                         "bytes": len(rec.data)})
            continue
        try:
            decoded = decode_image(rec.data, opts.max_pixels)
        except ImageRejected as rej:
            rejects.add({"key": rec.key, "status": rej.status, "reason": rej.reason, "bytes": len(rec.data)})
            continue
        sha = hashlib.sha256(rec.data).hexdigest()
        if sha in seen:
            dups.add({"key": rec.key, "duplicate_of": seen[sha], "sha256": sha})
            continue
        seen[sha] = rec.key
        w, h = decoded.size
        modes.add(decoded.image.mode)
        stage.add({"key": rec.key, "label": -1, "label_name": rec.label, "sha256": sha, "width": w,
                   "height": h, "mode": decoded.image.mode, "format": decoded.format.lower(), "data": rec.data})
        meta.append({"key": rec.key, "label_name": rec.label, "sha256": sha, "official": rec.split})
    stage.flush()
    rejects.flush()
    dups.flush()
    if not meta:
        raise ValueError(f"{source}: no valid images found")
    class_names = sorted({m["label_name"] for m in meta}, key=_natural)
    _assign_splits(meta, opts)
    split_of = {m["key"]: m["split"] for m in meta}
    writers = {s: _Writer(out / s, opts.shard_rows, SHARD_SCHEMA) for s in ("train", "val", "test")}
    index = {c: i for i, c in enumerate(class_names)}
    for path in stage.files:  # pass 2: stream staging rows into their split
        for batch in pq.ParquetFile(path).iter_batches(batch_size=500):
            for row in batch.to_pylist():
                row["label"] = index[row["label_name"]]
                writers[split_of[row["key"]]].add(row)
    for w in writers.values():
        w.flush()
    shutil.rmtree(staging, ignore_errors=True)
    for tmp, final in ((out / "_rejects", out / "rejects.parquet"), (out / "_dups", out / "duplicates.parquet")):
        parts = sorted(tmp.glob("*.parquet"))
        table = pa.concat_tables([pq.read_table(p) for p in parts]) if parts else (
            REJECT_SCHEMA if tmp.name == "_rejects" else DUP_SCHEMA).empty_table()
        pq.write_table(table, final)
        shutil.rmtree(tmp, ignore_errors=True)
    counts = {s: sum(1 for m in meta if m["split"] == s) for s in ("train", "val", "test")}
    per_class = {s: {c: sum(1 for m in meta if m["split"] == s and m["label_name"] == c) for c in class_names}
                 for s in ("train", "val", "test")}
    manifest = {
        "format": FORMAT, "name": name, "source": source, "class_names": class_names,
        "counts": counts, "per_class": per_class, "content_hash": content_hash(meta, class_names),
        "channels": 1 if modes <= {"L"} else 3, "rejects": pq.read_metadata(out / "rejects.parquet").num_rows,
        "duplicates": pq.read_metadata(out / "duplicates.parquet").num_rows,
        "seed": opts.seed, "val_fraction": opts.val_fraction, "test_fraction": opts.test_fraction,
        "created_at": datetime.now(timezone.utc).isoformat(), **opts.extra,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return DatasetArtifact.open(out)


def _natural(name: str) -> tuple[int, int | str]:
    return (0, int(name)) if name.isdigit() else (1, name)
