"""The archive index, partitioned by key range: the latest row of every source key.

Layout at DST:
  _nice/index/manifest.json     the partitions in key order: file, lower bound, rows, digests
  _nice/index/p-<id>.parquet    one partition's rows, sorted by source_key

Partition `i` holds the keys in `[lo_i, lo_{i+1})` (`lo_0` = ""), so a key has exactly one
partition and a shard, whose keys are one contiguous run of the sorted listing, reads only the
partitions that overlap its key range, one at a time, keeping only its own keys' rows: what a
shard holds in memory depends on the shard and the partition size, never on the archive.

`IndexWriter` merges a run into the index as a stream: every live key in key order, with the
run's row for it or none. A partition no key of which changed keeps its file; a changed one
is written anew (split in `PARTITION_ROWS` pieces once it exceeds twice that); the manifest
is replaced in one put, so a reader sees the old index or the new one, never a mix. Each
partition records how many of its settled rows each model digest made, so counting the
outputs of older models reads the manifest alone.
"""

from __future__ import annotations

import bisect
import io
import json
import logging
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from nice.compress.savings import SCHEMA, to_table
from nice.storage import Store

log = logging.getLogger(__name__)
INDEX = "_nice/index"
MANIFEST = f"{INDEX}/manifest.json"
LEGACY = "_nice/index.parquet"  # one file of the whole index, before partitions
PARTITION_ROWS = 10_000
RETRYABLE = {"failed"}  # statuses whose objects are tried again by the next run
DECISION = ["source_key", "source_etag", "config_hash", "status", "model_digest"]  # enough to decide, no masks


@dataclass
class Partition:
    file: str
    lo: str
    rows: int
    digests: dict[str, int] = field(default_factory=dict)  # settled (non-retryable) rows per model digest


def _read(store: Store, key: str, columns: list[str] | None = None) -> pa.Table:
    return pq.read_table(io.BytesIO(store.get(key)), columns=columns)


def _digests(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(r.get("model_digest") or "" for r in rows if r["status"] not in RETRYABLE))


class ArchiveIndex:
    """The index as it was when this process opened it (only a run's finish rewrites it, under
    the destination's lease)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        try:
            manifest = json.loads(store.get(MANIFEST))
            self.partitions = [Partition(**p) for p in manifest["partitions"]]
        except FileNotFoundError:
            self.partitions = self._legacy()
        self.los = [p.lo for p in self.partitions]
        # The last partition read: consecutive shards of a run mostly fall in the same one, so
        # it is fetched once, not once per shard (one partition in memory, as before).
        self._last: tuple[str, tuple[str, ...] | None, pa.Table] | None = None

    def _partition(self, i: int, columns: list[str] | None = None) -> pa.Table:
        file, cols = self.partitions[i].file, tuple(columns) if columns else None
        if self._last is None or self._last[:2] != (file, cols):
            self._last = (file, cols, _read(self.store, file, columns))
        return self._last[2]

    def _legacy(self) -> list[Partition]:
        """An index written before partitions: one partition (read whole, once; the next
        finish rewrites it as partitions)."""
        if not self.store.exists(LEGACY):
            return []
        table = _read(self.store, LEGACY, DECISION)
        return [Partition(LEGACY, "", table.num_rows, _digests(table.to_pylist()))]

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.partitions)

    def older_outputs(self, digest: str) -> int:
        """Settled rows made by a model other than `digest`."""
        return sum(n for p in self.partitions for d, n in p.digests.items() if d != digest)

    def partition_of(self, key: str) -> int:
        return bisect.bisect_right(self.los, key) - 1

    def rows_for(self, keys: list[str], columns: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """The index rows of `keys`, reading only the partitions that hold them."""
        if not keys:
            return {}
        wanted = pa.array(sorted(set(keys)), pa.string())
        out: dict[str, dict[str, Any]] = {}
        # Only the partitions that can hold one of the keys (a key has exactly one).
        for i in sorted({self.partition_of(k) for k in keys} - {-1}) if self.partitions else ():
            table = self._partition(i, columns)
            table = table.filter(pc.is_in(table["source_key"], value_set=wanted))
            out.update((r["source_key"], r) for r in table.to_pylist())
        return out

    def iter_rows(self, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every row in key order, one partition in memory at a time."""
        for p in self.partitions:
            yield from _read(self.store, p.file, columns).to_pylist()

    def read_partition(self, i: int) -> list[dict[str, Any]]:
        return self._partition(i).to_pylist()


class IndexWriter:
    """Merge one run into the index: `add(key, row)` for every live key in key order (`row`:
    this run's new row for it, or None to keep the indexed one), then `close()`. Keys not added
    (sources that are gone) leave the index."""

    def __init__(self, index: ArchiveIndex, run_id: str, digest: str) -> None:
        self.index, self.store, self.run_id, self.digest = index, index.store, run_id, digest
        self.new: list[Partition] = []
        self.redone_from_older_models = 0  # rows replacing a row of another model
        self._cur = -1  # the open old partition
        self._old: list[dict[str, Any]] = []
        self._pos = 0
        self._buf: list[dict[str, Any]] = []
        self._changed = False
        self._open_now = False
        self._last: str | None = None
        self._written: list[str] = []

    def add(self, key: str, row: dict[str, Any] | None) -> None:
        if self._last is not None and key <= self._last:
            raise ValueError(f"index keys must come in increasing order ({key!r} after {self._last!r})")
        self._last = key
        target = max(0, self.index.partition_of(key)) if self.index.partitions else 0
        if target != self._cur:
            # Partitions skipped on the way hold no live key: their sources are all gone.
            self._close_partition()
            self._open(target)
        old = None
        while self._pos < len(self._old) and self._old[self._pos]["source_key"] <= key:
            cand = self._old[self._pos]
            self._pos += 1
            if cand["source_key"] == key:
                old = cand
            else:
                self._changed = True  # an indexed key whose source is gone
        if row is not None:
            self._changed = True
            if old is not None and old.get("model_digest") != self.digest:
                self.redone_from_older_models += 1
            self._push(row)
        elif old is not None:
            self._push(old)

    def _open(self, i: int) -> None:
        self._cur, self._open_now = i, True
        has_old = i < len(self.index.partitions)
        self._old = self.index.read_partition(i) if has_old else []
        # A legacy whole-index file is always rewritten as partitions.
        self._pos, self._changed = 0, not has_old or self.index.partitions[i].file == LEGACY
        self._buf = []

    def _push(self, row: dict[str, Any]) -> None:
        self._buf.append({k: row.get(k) for k in SCHEMA.names})
        if len(self._buf) >= 2 * PARTITION_ROWS:  # split; the old file cannot be kept as it is
            self._changed = True
            self._flush(self._buf[:PARTITION_ROWS])
            self._buf = self._buf[PARTITION_ROWS:]

    def _flush(self, rows: list[dict[str, Any]]) -> None:
        key = f"{INDEX}/p-{uuid.uuid4().hex[:16]}.parquet"
        buf = io.BytesIO()
        pq.write_table(to_table(rows), buf)
        self.store.put(key, buf.getvalue())
        self._written.append(key)
        # Any bound between the previous partition's last key and this one's first is right;
        # the first partition holds every key below the second's bound.
        lo = rows[0]["source_key"] if self.new else ""
        self.new.append(Partition(key, lo, len(rows), _digests(rows)))

    def _close_partition(self) -> None:
        if not self._open_now:
            return
        self._open_now = False
        if self._pos < len(self._old):
            self._changed = True  # trailing keys whose sources are gone
        if not self._changed and self._cur < len(self.index.partitions):
            kept = self.index.partitions[self._cur]
            self.new.append(Partition(kept.file, "" if not self.new else kept.lo, kept.rows, kept.digests))
        elif self._buf:
            self._flush(self._buf)
        self._old, self._buf = [], []

    def close(self) -> list[Partition]:
        """Write the rest and the manifest; delete partition files no longer referenced."""
        self._close_partition()  # partitions after the last live key: all gone
        manifest = {"format": 1, "run_id": self.run_id, "rows": sum(p.rows for p in self.new),
                    "partitions": [asdict(p) for p in self.new]}
        self.store.put(MANIFEST, json.dumps(manifest).encode())
        keep = {p.file for p in self.new}
        for p in self.index.partitions:
            if p.file not in keep:
                self.store.delete(p.file)
        return self.new

    def abort(self) -> None:
        """Delete what this writer wrote (the manifest was never replaced: the index is unchanged)."""
        for key in self._written:
            self.store.delete(key)
        self._written = []

    def older_outputs(self) -> int:
        return sum(n for p in self.new for d, n in p.digests.items() if d != self.digest)
