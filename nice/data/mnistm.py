"""MNIST-M-style colour composites (Ganin & Lempitsky 2015): each MNIST digit blended into a
random crop of a real photograph, `out = |crop - digit|` per channel, at any size.

Photos come from the pinned Python packages only (scikit-image's bundled images and
scikit-learn's `load_sample_images`), so an ingest gives the same bytes and content hash on
every machine: Debian's `opencv-doc` photos, which the scenes source adds when installed,
would otherwise change the set (and every composite) with what the machine happens to have.
Train and test crops come from disjoint regions of every photo (the top 70% of its rows for
train, the rest for test), so no test pixel was ever seen in training. Deterministic for a seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from nice.data.mnist import ImageSplit, load_split

SKIMAGE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
                  "immunohistochemistry", "retina", "motorcycle_left", "motorcycle_right")
OPENCV_DIR = Path("/usr/share/doc/opencv-doc/examples/data")
TRAIN_FRACTION = 0.7  # of each photo's rows


def offline_photos(exclude: frozenset[str] = frozenset(),
                   opencv: bool = True) -> Iterator[tuple[str, np.ndarray]]:
    """(name, RGB uint8 array) of every offline photo we can find, in a fixed order:
    scikit-image's, scikit-learn's samples, then (`opencv`) Debian's opencv-doc when installed
    (minus `exclude`, by stem)."""
    try:
        import skimage.data

        for name in SKIMAGE_PHOTOS:
            try:
                yield f"skimage:{name}", np.asarray(getattr(skimage.data, name)())
            except Exception:  # noqa: BLE001 - some images need an optional download
                continue
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        for fname, img in zip(sample.filenames, sample.images):
            yield f"sklearn:{Path(fname).stem}", np.asarray(img)
    except ImportError:
        pass
    if opencv and OPENCV_DIR.is_dir():
        for p in sorted(OPENCV_DIR.glob("*.jpg")) + sorted(OPENCV_DIR.glob("*.png")):
            if p.stem in exclude:
                continue
            try:
                with Image.open(p) as img:
                    if img.mode in ("RGB", "RGBA", "P"):
                        yield f"opencv:{p.stem}", np.asarray(img.convert("RGB"))
            except OSError:
                continue


def is_colour_photo(pixels: np.ndarray, min_side: int) -> bool:
    return pixels.ndim == 3 and pixels.shape[2] == 3 and min(pixels.shape[:2]) >= min_side


def load_photos(min_side: int = 256) -> list[np.ndarray]:
    """mnist-m's backgrounds: the pinned packages' colour photos (at least min_side pixels),
    as RGB uint8 arrays; never opencv-doc's (see the module docstring)."""
    photos = [p for _, p in offline_photos(opencv=False) if is_colour_photo(p, min_side)]
    if not photos:
        raise RuntimeError("no offline photos found: install scikit-image (pinned in requirements.txt)")
    return photos


def composite(digits: np.ndarray, photos: list[np.ndarray], size: int, train: bool,
              rng: np.random.Generator) -> np.ndarray:
    """(N,28,28) uint8 digits -> (N,size,size,3) uint8 MNIST-M composites."""
    out = np.empty((len(digits), size, size, 3), dtype=np.uint8)
    for i, digit in enumerate(digits):
        photo = photos[int(rng.integers(len(photos)))]
        h, w = photo.shape[:2]
        split_row = int(h * TRAIN_FRACTION)
        top, bottom = (0, split_row) if train else (split_row, h)
        side = int(rng.integers(min(64, bottom - top), min(bottom - top, w) + 1))
        y = int(rng.integers(top, bottom - side + 1))
        x = int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(photo[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BILINEAR)
        big = np.asarray(Image.fromarray(digit).resize((size, size), Image.Resampling.BILINEAR))
        out[i] = np.abs(np.asarray(crop, dtype=np.int16) - big[..., None].astype(np.int16)).astype(np.uint8)
    return out


def iter_mnistm(split: str, size: int = 64, limit: int | None = None, seed: int = 0,
                chunk: int = 1000, mnist_path: str | Path | None = None):
    """Yield (images, labels) chunks; the same images as `make_mnistm`, in bounded memory."""
    base: ImageSplit = load_split("mnist", split, mnist_path)
    n = len(base) if limit is None else min(limit, len(base))
    rng = np.random.default_rng([seed, 0 if split == "train" else 1, size])
    photos = load_photos()
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        yield composite(base.images[start:stop], photos, size, split == "train", rng), base.labels[start:stop]


def make_mnistm(split: str, size: int = 64, limit: int | None = None, seed: int = 0,
                mnist_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images (N,size,size,3) uint8, labels (N,), class names, for MNIST's train or test split."""
    chunks = list(iter_mnistm(split, size, limit, seed, mnist_path=mnist_path))
    images = np.concatenate([c[0] for c in chunks]) if chunks else np.empty((0, size, size, 3), np.uint8)
    labels = np.concatenate([c[1] for c in chunks]) if chunks else np.empty((0,), np.int64)
    return images, labels, [str(i) for i in range(10)]
