"""Where images come from. Every source yields `Record`s (key, class name, encoded bytes,
official split or None) one at a time, so ingestion never holds a dataset in memory."""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Iterator

import numpy as np
from PIL import Image

from nice.storage import ObjectInfo, Store, class_of, open_store

# Sources named by a builtin dataset: fixed content (versioned with the project), never "live".
BUILTIN_SOURCES = ("mnist", "fashion-mnist", "mnist-m", "scenes", "scenes-fashion")
# Scenes per split when no --limit is given (docs/reports/scenes: what the default models saw).
SCENES_COUNTS = {"train": 10_000, "val": 1_000, "test": 1_000}


@dataclass
class Record:
    key: str
    label: str
    data: bytes
    split: str | None = None  # "train" / "test" when the source has an official split


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _jpeg(arr: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def scene_records(name: str, limit: int | None = None, seed: int = 0) -> Iterator[Record]:
    """`scenes` (digits) / `scenes-fashion`: native-size JPEG q90 frames (what a camera writes),
    with official train / val / test splits on disjoint background photos."""
    from nice.data.scenes import SOURCES, class_names, iter_scenes, named_photos

    variant = SOURCES[name]
    names, photos = class_names(variant), named_photos()
    for split, default in SCENES_COUNTS.items():
        count = default if limit is None else limit
        for i, (frame, label, _, _) in enumerate(iter_scenes(variant, split, count, seed, photos)):
            cls = names[label]
            yield Record(key=f"{split}/{cls}/{i:05d}.jpg", label=cls, data=_jpeg(frame), split=split)


def builtin_records(name: str, limit: int | None = None, size: int = 64, seed: int = 0) -> Iterator[Record]:
    """mnist / fashion-mnist as PNG, mnist-m as JPEG q90 (like photos users store), scenes as
    native-size JPEG q90."""
    from nice.data.mnist import load_split

    if name.startswith("scenes"):
        yield from scene_records(name, limit, seed)
        return
    for split in ("train", "test"):
        if name == "mnist-m":
            from nice.data.mnistm import iter_mnistm

            chunks = iter_mnistm(split, size, limit=limit, seed=seed)
            names, encode, ext = [str(i) for i in range(10)], _jpeg, ".jpg"
        else:
            data = load_split(name, split)
            n = len(data) if limit is None else min(limit, len(data))
            chunks = iter([(data.images[:n], data.labels[:n])])
            names, encode, ext = data.class_names, _png, ".png"
        i = 0
        for images, labels in chunks:
            for img, lbl in zip(images, labels):
                cls = names[int(lbl)]
                yield Record(key=f"{split}/{cls}/{i:05d}{ext}", label=cls, data=encode(img), split=split)
                i += 1


def _listed(store: Store) -> Iterator[ObjectInfo]:
    """The objects of a store that ingestion reads (no dot-files, no `_nice/` state)."""
    for obj in store.list():
        parts = PurePosixPath(obj.key).parts
        if not (any(p.startswith(".") for p in parts) or parts[0] == "_nice"):
            yield obj


def store_records(uri: str, endpoint_url: str | None = None) -> Iterator[Record]:
    """`class_name/file.ext` under a folder or S3 prefix; files at the root have no class."""
    store = open_store(uri, endpoint_url)
    for obj in _listed(store):
        label = class_of(obj.key)
        try:
            data = store.get(obj.key)
        except Exception as exc:  # noqa: BLE001 - reported as a reject by the caller
            yield Record(key=obj.key, label=label, data=b"", split=f"error:{type(exc).__name__}: {exc}")
            continue
        yield Record(key=obj.key, label=label, data=data)


def open_source(spec: str, limit: int | None = None, size: int = 64, seed: int = 0,
                endpoint_url: str | None = None) -> tuple[str, Iterator[Record]]:
    """`mnist`, `fashion-mnist`, `mnist-m`, `scenes`, `scenes-fashion`, `folder:PATH`, `s3://bucket/prefix/` (or a plain path)."""
    if spec in BUILTIN_SOURCES:
        return spec, builtin_records(spec, limit, size, seed)
    if spec.startswith("folder:"):
        return spec, store_records(spec[len("folder:"):], endpoint_url)
    return spec, store_records(spec, endpoint_url)


def source_fingerprint(spec: str, endpoint_url: str | None = None) -> str:
    """What a source holds, without reading it: `builtin:<name>` for a builtin dataset, else
    the SHA-256 of the sorted (key, size, ETag) listing of the folder or S3 prefix that
    ingestion would read. Equal fingerprints mean an ingest would read the same objects."""
    if spec in BUILTIN_SOURCES:
        return f"builtin:{spec}"
    uri = spec[len("folder:"):] if spec.startswith("folder:") else spec
    digest = hashlib.sha256()
    for obj in sorted(_listed(open_store(uri, endpoint_url)), key=lambda o: o.key):
        digest.update(f"{obj.key}\0{obj.size}\0{obj.etag}\n".encode())
    return f"sha256:{digest.hexdigest()}"
