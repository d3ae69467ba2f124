"""The Dataset artifact on disk and a streaming PyTorch view of it.

    DIR/manifest.json                 name, source, class names, counts, content hash, ...
    DIR/<split>/part-NNNNN.parquet    key, label, label_name, sha256, width, height, mode, format, data
    DIR/rejects.parquet               key, status, reason, bytes (files that were not admitted)
    DIR/duplicates.parquet            key, duplicate_of, sha256 (same content admitted once)
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from nice.imageio import decode_image, to_tensor

SPLITS = ("train", "val", "test")
FORMAT = "nice-dataset/1"

SHARD_SCHEMA = pa.schema([
    ("key", pa.string()), ("label", pa.int32()), ("label_name", pa.string()), ("sha256", pa.string()),
    ("width", pa.int32()), ("height", pa.int32()), ("mode", pa.string()), ("format", pa.string()),
    ("data", pa.binary()),
])


@dataclass
class DatasetArtifact:
    path: Path
    manifest: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> "DatasetArtifact":
        path = Path(path)
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{path} is not a NICE dataset (no manifest.json)")
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{path}: unsupported dataset format {manifest.get('format')!r}")
        return cls(path, manifest)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])

    @property
    def content_hash(self) -> str:
        return str(self.manifest["content_hash"])

    @property
    def channels(self) -> int:
        return int(self.manifest["channels"])

    def shards(self, split: str) -> list[Path]:
        return sorted((self.path / split).glob("part-*.parquet"))

    def rejects(self) -> list[dict[str, Any]]:
        p = self.path / "rejects.parquet"
        return pq.read_table(p).to_pylist() if p.is_file() else []

    def image_sizes(self) -> set[tuple[int, int]]:
        """The (width, height) of its images, every split, from the metadata columns (no decode)."""
        sizes: set[tuple[int, int]] = set()
        for split in SPLITS:
            for shard in self.shards(split):
                t = pq.read_table(shard, columns=["width", "height"])
                sizes |= set(zip(t.column("width").to_pylist(), t.column("height").to_pylist()))
        return sizes

    def dataset(self, split: str, **kwargs: Any) -> "ShardDataset":
        return ShardDataset(self, split, **kwargs)

    def export(self, split: str, out: str | Path) -> Path:
        """Write a split's files, byte for byte, as `out/<class>/<name>` (a labelled folder)."""
        out = Path(out)
        for shard in self.shards(split):
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=512, columns=["key", "label_name", "data"]):
                for key, cls, data in zip(*(batch.column(c).to_pylist() for c in ("key", "label_name", "data"))):
                    target = out / cls / key.replace("/", "__")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(data)
        return out


class ShardDataset(IterableDataset):
    """Streams (image in [0,1] CxHxW, label) from a split's shards, a record batch at a time,
    so memory does not grow with the dataset. Shuffles shard order and within a buffer."""

    def __init__(self, artifact: DatasetArtifact, split: str, shuffle: bool = False, seed: int = 0,
                 buffer: int = 2048, read_batch: int = 256, view: Any = None, augment: Any = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        self.artifact, self.split, self.shuffle, self.seed = artifact, split, shuffle, seed
        self.buffer, self.read_batch = buffer, read_batch
        self.view = view  # nice.view.View: every image reaches the model as its view
        self.augment = augment  # nice.view.Augment (training): a random crop, then the view
        self.epoch = 0
        self.length = int(artifact.manifest["counts"].get(split, 0))

    def __len__(self) -> int:
        return self.length

    def _decode(self, data: bytes) -> torch.Tensor:
        img = decode_image(data).image
        if self.artifact.channels == 3 and img.mode != "RGB":
            img = img.convert("RGB")
        if self.augment is None and self.view is not None:
            # uint8 to the view, then float: no float copy of a native photo (25 MB at 2 MP;
            # freed and reallocated per image they fragment the heap by ~2 MB an image)
            return to_tensor(self.view.apply(np.asarray(img)))
        x = to_tensor(img)
        return self.augment(x) if self.augment is not None else x

    def _rows(self) -> Iterator[tuple[bytes, int]]:
        shards = self.artifact.shards(self.split)
        rng = random.Random(self.seed + self.epoch)
        if self.shuffle:
            rng.shuffle(shards)
        info = get_worker_info()
        if info is not None:
            shards = shards[info.id::info.num_workers]
        for shard in shards:
            for batch in pq.ParquetFile(shard).iter_batches(batch_size=self.read_batch, columns=["data", "label"]):
                yield from zip(batch.column("data").to_pylist(), batch.column("label").to_pylist())

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rng = random.Random(self.seed * 7919 + self.epoch)
        self.epoch += 1
        rows = self._rows()
        if not self.shuffle:
            for data, label in rows:
                yield self._decode(data), torch.tensor(label)
            return
        buf: list[tuple[bytes, int]] = []
        for row in rows:
            buf.append(row)
            if len(buf) >= self.buffer:
                data, label = buf.pop(rng.randrange(len(buf)))
                yield self._decode(data), torch.tensor(label)
        rng.shuffle(buf)
        for data, label in buf:
            yield self._decode(data), torch.tensor(label)
