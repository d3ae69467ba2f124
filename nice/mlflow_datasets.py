"""The datasets a step used, as MLflow datasets (`mlflow.log_input`): one per split, named
`<dataset>/<split>`, whose digest is the Dataset artifact's content hash (builtin datasets get
a content hash of their arrays), whose source is where the data came from (the ingested S3
prefix or folder, the builtin's canonical URL), and whose profile carries the full hash,
row count and classes. The archive an evaluation ran on is a dataset too (`archive_dataset`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

from mlflow.data.dataset_source import DatasetSource
from mlflow.data.meta_dataset import MetaDataset

# MLflow stores digests in a VARCHAR(36) (PostgreSQL enforces it): a 128-bit prefix of the
# SHA-256 content hash; the full hash is in the profile and the `nice.dataset_content_hash` tag.
DIGEST_CHARS = 32


@dataclass(frozen=True)
class DatasetInfo:
    """What identifies a dataset: name, full content hash, source URI, per-split counts."""

    name: str
    content_hash: str
    source: str
    counts: dict[str, int]
    class_names: list[str]
    channels: int
    artifact: str | None = None  # the Dataset artifact directory, when there is one

    @property
    def digest(self) -> str:
        return self.content_hash[:DIGEST_CHARS]


class NiceDataset(MetaDataset):
    """A MetaDataset (metadata only, nothing is copied) with a profile shown in the MLflow UI."""

    def __init__(self, source: DatasetSource, name: str, digest: str, profile: dict[str, Any]) -> None:
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest)

    @property
    def profile(self) -> dict[str, Any]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def dataset_info(spec: str) -> DatasetInfo:
    """A builtin name (`mnist`, `fashion-mnist`) or a Dataset artifact directory."""
    from nice.data.sources import BUILTIN

    if spec in BUILTIN:
        return _builtin_info(spec)
    from nice.ingest import DatasetArtifact

    art = DatasetArtifact.open(spec)
    m = art.manifest
    return DatasetInfo(name=str(m.get("name") or art.path.name), content_hash=art.content_hash,
                       source=str(m.get("source") or art.path.resolve().as_uri()),
                       counts={k: int(v) for k, v in m["counts"].items()}, class_names=art.class_names,
                       channels=art.channels, artifact=str(art.path.resolve()))


@functools.lru_cache(maxsize=4)
def _builtin_info(name: str) -> DatasetInfo:
    # Stable across machines and file formats (.gz or not): a hash of the decoded arrays.
    from nice.data.mnist import CLASS_NAMES, load_split

    h = hashlib.sha256(json.dumps([name, CLASS_NAMES[name]]).encode())
    counts = {}
    for split in ("train", "test"):
        data = load_split(name, split)
        h.update(f"{split}\t{data.images.shape}\n".encode())
        h.update(data.images.tobytes())
        h.update(data.labels.astype("<i8").tobytes())
        counts[split] = len(data)
    return DatasetInfo(name=name, content_hash=h.hexdigest(), source=name, counts=counts,
                       class_names=list(CLASS_NAMES[name]), channels=1)


def split_dataset(info: DatasetInfo, split: str) -> NiceDataset:
    """The MLflow dataset for one split of `info`."""
    profile = {"content_hash": info.content_hash, "split": split, "num_rows": info.counts.get(split, 0),
               "num_classes": len(info.class_names), "channels": info.channels}
    if info.artifact:
        profile["artifact"] = info.artifact
    return NiceDataset(source_for(info.source), f"{info.name}/{split}", info.digest, profile)


def archive_dataset(rows: Iterable[dict[str, Any]], source: str) -> NiceDataset:
    """The archive objects a savings table covers: digest over (source URI, ETag) of each row."""
    keys = sorted((str(r.get("source_uri") or r.get("source_key")), str(r.get("source_etag") or ""))
                  for r in rows)
    h = hashlib.sha256(json.dumps(source).encode())
    for uri, etag in keys:
        h.update(f"{uri}\t{etag}\n".encode())
    digest = h.hexdigest()
    return NiceDataset(source_for(source), f"archive:{source}"[:500], digest[:DIGEST_CHARS],
                       {"content_hash": digest, "num_rows": len(keys)})


def source_for(uri: str) -> DatasetSource:
    """An MLflow DatasetSource for a URI, folder or builtin name."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.http_dataset_source import HTTPDatasetSource

    from nice.data.mnist import MIRRORS

    if uri in MIRRORS:  # loaded offline, but this is where the dataset is published
        return HTTPDatasetSource(MIRRORS[uri][0])
    uri = uri.removeprefix("folder:")
    if "://" not in uri:
        from pathlib import Path

        path = Path(uri)
        if not path.exists():  # a generated dataset (mnist-m): made by code, not read from anywhere
            return CodeDatasetSource({"nice.generator": uri})
        uri = path.resolve().as_uri()
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    try:
        with warnings.catch_warnings():  # "file:" matches two registered local source types, alike
            warnings.simplefilter("ignore", UserWarning)
            return resolve_dataset_source(uri)
    except Exception:  # noqa: BLE001 - a scheme MLflow has no source type for
        return CodeDatasetSource({"nice.uri": uri})
