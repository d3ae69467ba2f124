"""The plan of an archive run, written as a stream: the sorted listing of SRC in chunks at DST,
and the output names that collide with a source key.

  runs/<run_id>/objects/<chunk>.parquet   the listing, OBJECT_CHUNK objects per file, key order
  runs/<run_id>/collisions.json            output name -> the source whose output it would be

A shard is a contiguous row range of the listing and reads only the chunks over it, so no
step but the plan ever holds the listing, and the plan holds one chunk at a time.
"""

from __future__ import annotations

import heapq
import io
from typing import Any
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from nice.codec import EXTENSIONS, output_name
from nice.storage import ObjectInfo, Store

OBJECT_CHUNK = 10_000
META = "_nice"
OBJECTS_SCHEMA = pa.schema([("key", pa.string()), ("size", pa.int64()), ("etag", pa.string())])


def iter_sources(src: Store, exclude: str | None = None) -> Iterator[ObjectInfo]:
    """Every object under SRC in key order (as S3 lists it and LocalStore walks it), the
    metadata folder and keys under `exclude` (DST, when it lies inside SRC) left out."""
    last: str | None = None
    for o in src.list():
        if o.key.startswith(META + "/") or (exclude and o.key.startswith(exclude)):
            continue
        if last is not None and o.key <= last:
            raise RuntimeError(f"{src.uri} listed {o.key!r} after {last!r}: listings must come in key order")
        last = o.key
        yield o


class CollisionFinder:
    """Output names that are also source keys (`x` -> `x.webp` beside a source `x.webp`), found
    in one pass over the sorted listing: a source's appended names sort after it, so only the
    names not yet passed are pending (a handful, whatever the archive's size)."""

    def __init__(self) -> None:
        self._pending: list[tuple[str, str]] = []  # heap of (output name, source key)
        self.taken: dict[str, str] = {}  # output name -> the source that may not use it

    def add(self, key: str) -> None:
        while self._pending and self._pending[0][0] < key:
            heapq.heappop(self._pending)
        while self._pending and self._pending[0][0] == key:
            name, source = heapq.heappop(self._pending)
            self.taken[name] = source
        for fmt in EXTENSIONS:
            name = output_name(key, fmt)
            if name != key:
                heapq.heappush(self._pending, (name, key))


def chunk_key(prefix: str, i: int) -> str:
    return f"{prefix}/objects/{i:06d}.parquet"


def _put_chunk(store: Store, key: str, objects: list[ObjectInfo]) -> None:
    table = pa.table({"key": [o.key for o in objects], "size": [o.size for o in objects],
                      "etag": [o.etag for o in objects]}, schema=OBJECTS_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.put(key, buf.getvalue())


class PlanWriter:
    """Writes the listing chunk by chunk while it streams past."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, prefix
        self.count = 0
        self.chunks = 0
        self._buf: list[ObjectInfo] = []

    def add(self, obj: ObjectInfo) -> None:
        self._buf.append(obj)
        self.count += 1
        if len(self._buf) == OBJECT_CHUNK:
            self._flush()

    def _flush(self) -> None:
        _put_chunk(self.store, chunk_key(self.prefix, self.chunks), self._buf)
        self.chunks += 1
        self._buf = []

    def close(self) -> None:
        if self._buf:
            self._flush()


def read_rows(store: Store, prefix: str, start: int, stop: int,
              cache: dict[str, Any] | None = None) -> list[ObjectInfo]:
    """Objects `start` to `stop` (exclusive) of a planned listing, reading only their chunks.
    `cache` (a dict the caller keeps) holds the last chunk read: a run's consecutive shards
    share chunks (10 shards of 1,000 a chunk), which are then fetched once."""
    out: list[ObjectInfo] = []
    if stop <= start:
        return out
    for c in range(start // OBJECT_CHUNK, (stop - 1) // OBJECT_CHUNK + 1):
        key = chunk_key(prefix, c)
        if cache is not None and cache.get("key") == key:
            table = cache["table"]
        else:
            table = pq.read_table(io.BytesIO(store.get(key)))
            if cache is not None:
                cache.update(key=key, table=table)
        lo, hi = max(start - c * OBJECT_CHUNK, 0), min(stop - c * OBJECT_CHUNK, table.num_rows)
        out += [ObjectInfo(r["key"], r["size"], r["etag"]) for r in table.slice(lo, hi - lo).to_pylist()]
    return out
