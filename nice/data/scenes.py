"""Scenes: one small object in a real photograph at native size (issue 18), the case NICE is
for (a camera frame where the object that decides the answer fills a small part).

Each scene is a crop of an offline photo (scikit-image, scikit-learn's samples, Debian's
`opencv-doc` examples) resized to a native frame size (480x320 .. 1920x1080, landscape and
portrait), with one object (an MNIST digit, or a Fashion-MNIST item for the `fashion`
variant) of 10-30% of the shorter side, coloured to contrast with the photo under it and
alpha-blended in, at a random position. Label = the object's class. Train, val and test use
disjoint background photos (and disjoint objects: test objects come from the official test
split). Every scene is drawn from its own seeded generator, so a scene depends only on
(seed, variant, split, index): deterministic, and the same whatever `limit` is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
from PIL import Image, ImageFilter

from nice.data.mnist import CLASS_NAMES, load_split
from nice.data.mnistm import is_colour_photo, offline_photos

VARIANTS = {"digits": "mnist", "fashion": "fashion-mnist"}
SOURCES = {"scenes": "digits", "scenes-fashion": "fashion"}  # `nice ingest` source name -> variant
SPLITS = ("train", "val", "test")
# (width, height) of landscape frames: phone/camera/video sizes; a third are drawn portrait.
FRAME_SIZES = ((480, 320), (640, 480), (800, 600), (1024, 768), (1280, 720), (1280, 960), (1920, 1080))
PORTRAIT_P = 0.3
OBJECT_SCALE = (0.10, 0.30)  # object side / the frame's shorter side
BOLD = 3  # max-filter size that thickens the object's strokes at 28 px (1 = as drawn)
# opencv-doc files that are drawings, logos, text or calibration targets, not photos.
NOT_PHOTOS = frozenset({
    "LinuxLogo", "WindowsLogo", "opencv-logo", "opencv-logo-white", "gradient", "chessboard", "notes",
    "imageTextN", "imageTextR", "ml", "templ", "tmpl", "mask", "detect_blob", "cards", "sudoku",
    "ellipses", "text_defocus", "text_motion", "digits", "board", "HappyFish", "blox",
    "pic1", "pic2", "pic3", "pic4", "pic5", "pic6", "pca_test1",  # flat synthetic shapes
})
SPLIT_SHARE = {"test": 0.2, "val": 0.1}  # of the photos (by a hash of their name); the rest train
# The scenes classifier (what `nice train-classifier` trains on a scenes artifact, under the
# user's overrides): a ResNet of width 32 with global max pooling at a 320 px letterbox view,
# trained with the object-scale curriculum (`CurriculumConfig`: 80 px object crops on the train
# photos' 24 variants, then whole views). The best measured recipe (docs/results.md "Scenes":
# native val 91.6%, test 85.3%; ~107 min on one CPU thread). No random-crop augmentation: a crop
# of 35% of the frame loses a 10% object more often than not.
TRAINING_OVERRIDES = {
    "classifier": {"arch": "resnet", "width": 32, "pool": "max", "image_size": 320, "view": "letterbox"},
    "train_classifier": {"augment": "none", "lr": 2e-3, "batch_size": 64, "weight_decay": 1e-4, "curriculum": {
        "crop": 80, "crop_steps": 20_000, "view_steps": 1_500, "view_lr": 5e-4, "views": 30_000,
        "backgrounds": "variants"}},
}
# `nice demo --dataset scenes`: the short recipe every scenes rate figure was measured with
# (docs/reports/scenes-levers-500: 224 px view, 64 px crops on the photos as they are, 8,000 +
# 800 steps; 79.0% test), about a third of the full recipe's time.
DEMO_OVERRIDES = {
    "classifier": {"image_size": 224},
    "train_classifier": {"curriculum": {"crop": 64, "views": 20_000, "crop_steps": 8_000, "view_steps": 800,
                                        "backgrounds": "photos"}},
}


class Scene(NamedTuple):
    frame: np.ndarray  # (H, W, 3) uint8
    label: int
    photo: str  # the background photo's name
    box: tuple[int, int, int, int]  # the object's square in the frame: (top, left, bottom, right)


@dataclass(frozen=True)
class Photo:
    name: str
    pixels: np.ndarray  # (H, W, 3) uint8


def named_photos(min_side: int = 300) -> list[Photo]:
    """The offline colour photos that make backgrounds, by name, sorted."""
    photos = [Photo(name, px) for name, px in offline_photos(NOT_PHOTOS) if is_colour_photo(px, min_side)]
    return sorted(photos, key=lambda p: p.name)


PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def folder_photos(paths: tuple[str, ...] | list[str], max_side: int, min_side: int = 300) -> list[Photo]:
    """Colour photos of at least `min_side` from files or folders (read recursively, sorted),
    each scaled to at most `max_side` pixels on its longer side (a curriculum renders at the
    view's size, so more is memory for nothing). Unreadable or grey files are skipped; a path
    that does not exist is an error."""
    files: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.suffix.lower() in PHOTO_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"extra photos: {entry} does not exist")
    out = []
    for f in files:
        try:
            with Image.open(f) as img:
                if min(img.size) < min_side:
                    continue
                img = img.convert("RGB")
                img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                px = np.asarray(img)
        except OSError:
            continue
        if not (px[..., 0] == px[..., 1]).all() or not (px[..., 1] == px[..., 2]).all():  # grey files skipped
            out.append(Photo(f"extra:{f.stem}", px))
    return out


def photo_split(name: str) -> str:
    """A photo's split, from a hash of its name (stable whatever else is installed)."""
    u = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64
    return "test" if u < SPLIT_SHARE["test"] else "val" if u < SPLIT_SHARE["test"] + SPLIT_SHARE["val"] else "train"


def photos_by_split(photos: list[Photo]) -> dict[str, list[Photo]]:
    out: dict[str, list[Photo]] = {s: [] for s in SPLITS}
    for p in photos:
        out[photo_split(p.name)].append(p)
    # Few photos installed (no opencv-doc): every split still gets its own, disjoint photos.
    for split in SPLITS:
        if not out[split]:
            donor = max(SPLITS, key=lambda s: len(out[s]))
            if len(out[donor]) < 2:
                raise RuntimeError(f"scenes need at least 3 offline photos, found {len(photos)}: "
                                   "install scikit-image (and Debian's opencv-doc for more)")
            out[split].append(out[donor].pop())
    return out


def _frame(rng: np.random.Generator) -> tuple[int, int]:
    w, h = FRAME_SIZES[int(rng.integers(len(FRAME_SIZES)))]
    return (h, w) if rng.random() < PORTRAIT_P else (w, h)


def _background(photo: np.ndarray, width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A random crop of `photo` with the frame's aspect (50-100% of the largest that fits),
    resized to the frame."""
    ph, pw = photo.shape[:2]
    aspect = width / height
    ch_max = min(ph, pw / aspect)
    ch = max(8.0, ch_max * rng.uniform(0.5, 1.0))
    cw = ch * aspect
    y = rng.uniform(0, ph - ch)
    x = rng.uniform(0, pw - cw)
    img = Image.fromarray(photo).resize((width, height), Image.Resampling.BILINEAR,
                                         box=(x, y, x + cw, y + ch), reducing_gap=3.0)
    return np.asarray(img)


def place_object(background: np.ndarray, obj: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Blend one 28x28 grey object into the frame: side 10-30% of the shorter side, a colour
    far from the photo under it (so that it can be read at the view's size), 90-100% opaque.
    Returns the frame and the object's square (top, left, bottom, right)."""
    h, w = background.shape[:2]
    side = max(4, int(round(min(h, w) * rng.uniform(*OBJECT_SCALE))))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    # Strokes thickened first (3x3 max filter at 28 px): an MNIST stroke is ~3/28 of the digit,
    # 1.4 view pixels at the smallest size, which no small CNN reads reliably.
    bold = Image.fromarray(obj).filter(ImageFilter.MaxFilter(BOLD)) if BOLD > 1 else Image.fromarray(obj)
    alpha = np.asarray(bold.resize((side, side), Image.Resampling.BILINEAR), np.float32) / 255.0
    alpha = alpha[..., None] * rng.uniform(0.9, 1.0)
    region = background[y:y + side, x:x + side].astype(np.float32)
    under = region.mean(axis=(0, 1))
    # Each channel far from the photo's mean under the object: dark on light, light on dark.
    colour = np.where(under > 127, rng.uniform(0, 90, 3), rng.uniform(165, 255, 3)).astype(np.float32)
    out = background.copy()
    out[y:y + side, x:x + side] = np.clip(region * (1 - alpha) + colour * alpha, 0, 255).round().astype(np.uint8)
    return out, (y, x, y + side, x + side)


def _objects(variant: str, split: str, mnist_path: str | Path | None = None):
    """(images, labels) the split's objects come from: test from the official test split, val
    from the end of the official train split, train from its start (disjoint)."""
    name = VARIANTS[variant]
    if split == "test":
        data = load_split(name, "test", mnist_path if name == "mnist" else None)
        return data.images, data.labels
    data = load_split(name, "train", mnist_path if name == "mnist" else None)
    cut = len(data) - 10_000
    return (data.images[:cut], data.labels[:cut]) if split == "train" else (data.images[cut:], data.labels[cut:])


def iter_scenes(variant: str, split: str, count: int, seed: int = 0,
                photos: list[Photo] | None = None, mnist_path: str | Path | None = None,
                fit: int | None = None, start: int = 0, extra_train: list[Photo] | None = None) -> Iterator[Scene]:
    """Yield the Scenes start..start+count-1 of a split (frame, label, photo name, object box).
    `fit`: render each scene directly at the size that fits a `fit`-pixel square (what a
    letterbox view of that side sees of it), ~20x cheaper than the native frame: the same
    draws, so the same scene, only smaller (training on fresh scenes every epoch).
    `extra_train`: more backgrounds for the train split only, after its own photos."""
    if variant not in VARIANTS:
        raise ValueError(f"scenes variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    pool = photos_by_split(photos if photos is not None else named_photos())[split]
    if split == "train" and extra_train:
        pool = pool + list(extra_train)
    images, labels = _objects(variant, split, mnist_path)
    for i in range(start, start + count):
        rng = np.random.default_rng([seed, SPLITS.index(split), list(VARIANTS).index(variant), i])
        width, height = _frame(rng)
        if fit:
            f = fit / max(width, height)
            width, height = max(1, round(width * f)), max(1, round(height * f))
        photo = pool[int(rng.integers(len(pool)))]
        frame = _background(photo.pixels, width, height, rng)
        j = int(rng.integers(len(images)))
        out, box = place_object(frame, images[j % len(images)], rng)
        yield Scene(out, int(labels[j % len(labels)]), photo.name, box)


def scenes_source(dataset: str | Path) -> tuple[str, int] | None:
    """(variant, seed) of a `nice ingest scenes` artifact, whose generator knows each object's
    box; None for anything else."""
    manifest = Path(dataset) / "manifest.json"
    if not manifest.is_file():
        return None
    m = json.loads(manifest.read_text())
    variant = SOURCES.get(str(m.get("source", "")))
    return (variant, int(m.get("seed", 0))) if variant else None


def class_names(variant: str) -> list[str]:
    return list(CLASS_NAMES[VARIANTS[variant]])


def export_folder(variant: str, split: str, count: int, out: str | Path, seed: int = 0) -> Path:
    """Write a split's scenes as `out/<class>/<index>.jpg`, JPEG q90 (a camera's archive): the
    same bytes `nice ingest scenes` stores."""
    from nice.ingest.sources import _jpeg

    out = Path(out)
    names = class_names(variant)
    for i, (frame, label, _, _) in enumerate(iter_scenes(variant, split, count, seed)):
        target = out / names[label] / f"{i:05d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_jpeg(frame))
    return out
