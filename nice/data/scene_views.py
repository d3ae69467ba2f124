"""Scenes rendered at a classifier's view, with their objects' boxes: the training data of the
object-scale curriculum (`nice.training.curriculum`).

A scenes artifact is a seeded generator (`nice.data.scenes`): its train frames are the first
scenes of the train split. Training renders the train split's scenes directly at the size the
view sees (`iter_scenes(fit=...)`, ~1/20 of the cost of a native frame and the same draws), as
many as the curriculum asks for, with each object's box in view pixels, which only the
generator knows.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from nice.config import CURRICULUM_BACKGROUNDS, ClassifierConfig
from nice.data.scenes import Photo, class_names, folder_photos, iter_scenes, named_photos, photos_by_split

# The train photos in every orientation of the square's symmetry group, in three channel orders
# (24 backgrounds per photo): the ~29 train photos are what limits generalisation to unseen
# ones, and the object is placed after, so digits are never flipped.
ORIENTATIONS = (lambda a: a, np.fliplr, np.flipud, lambda a: np.rot90(a, 2),
                lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 3), lambda a: np.rot90(np.fliplr(a), 1),
                lambda a: np.rot90(np.fliplr(a), 3))
CHANNEL_ORDERS = ((0, 1, 2), (2, 1, 0), (1, 2, 0))
CHUNK = 2000  # scenes per render job


@dataclass
class RenderedViews:
    """N views (N, S, S, 3) uint8, their labels in the artifact's class order, and each object's
    square (top, left, bottom, right) in view pixels."""
    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _variants(photos: list[Photo]) -> list[Photo]:
    return [Photo(p.name, np.ascontiguousarray(turn(p.pixels)[..., list(order)]))
            for p in photos for turn in ORIENTATIONS for order in CHANNEL_ORDERS]


@functools.cache  # built once per render process
def train_backgrounds(kind: str) -> list[Photo] | None:
    """None (the train photos as they are) or their 24 variants each; a variant keeps its
    photo's name, hence its split."""
    if kind not in CURRICULUM_BACKGROUNDS:
        raise ValueError(f"backgrounds must be one of {CURRICULUM_BACKGROUNDS}, got {kind!r}")
    if kind == "photos":
        return None
    return _variants(photos_by_split(named_photos())["train"])


@functools.cache  # read once per process
def _extra_photos(paths: tuple[str, ...], size: int) -> list[Photo]:
    return folder_photos(paths, max_side=2 * size) if paths else []


@functools.cache  # built once per render process
def extra_backgrounds(kind: str, paths: tuple[str, ...], size: int) -> list[Photo]:
    """`curriculum.extra_photos` (train only), at most twice the view's side, in the same
    variants as the train photos."""
    photos = _extra_photos(paths, size)
    return _variants(photos) if kind == "variants" else photos


def _render(job: tuple[str, int, int, ClassifierConfig, int, str, tuple[str, ...]]
            ) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Views, source-order labels and view-pixel boxes of train scenes start..start+n."""
    from nice.view import View

    variant, start, n, classifier, seed, kind, extra = job
    view = View(classifier)
    size = view.size
    xs = np.empty((n, size, size, 3), np.uint8)
    ys = np.empty(n, np.int64)
    boxes = np.empty((n, 4), np.int64)
    scenes = iter_scenes(variant, "train", n, seed, photos=train_backgrounds(kind), fit=size, start=start,
                         extra_train=extra_backgrounds(kind, extra, size))
    for k, scene in enumerate(scenes):
        g = view.geometry(*scene.frame.shape[:2])
        xs[k], ys[k] = view.apply(scene.frame), scene.label
        boxes[k] = np.asarray(scene.box) + np.tile(g.offset, 2)  # a fit-size frame: only the letterbox offset
    return start, xs, ys, boxes


def render_train_views(variant: str, count: int, classifier: ClassifierConfig, seed: int,
                       artifact_classes: list[str], backgrounds: str = "photos", workers: int = 2,
                       progress: bool = True, extra_photos: tuple[str, ...] = ()) -> RenderedViews:
    """The first `count` train scenes of (variant, seed) at the classifier's letterbox view.
    Labels follow `artifact_classes` (an artifact sorts its classes by name; Fashion-MNIST's
    source order differs). Filled in place: 30,000 views at 320 px are 9 GB. `extra_photos`
    adds train-only backgrounds (files or folders) to the train photos."""
    if classifier.view != "letterbox":
        raise ValueError(f"the scenes curriculum renders letterbox views, not {classifier.view!r}")
    train_backgrounds(backgrounds)  # refuse a bad kind before any worker starts
    size = classifier.image_size
    extra = tuple(str(p) for p in extra_photos)
    # A bad path or no colour photo fails here, before any worker starts; the parent keeps only
    # the photos, not their 24 variants (each render process builds its own).
    if extra and not _extra_photos(extra, size):
        raise ValueError(f"train_classifier.curriculum.extra_photos: no colour photos in {list(extra)}")
    views = RenderedViews(np.empty((count, size, size, 3), np.uint8), np.empty(count, np.int64),
                          np.empty((count, 4), np.int64))
    jobs = [(variant, s, min(CHUNK, count - s), classifier, seed, backgrounds, extra)
            for s in range(0, count, CHUNK)]
    bar = tqdm(total=count, desc="render train views", unit="view", disable=not progress)
    if workers > 1 and len(jobs) > 1:
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_render, jobs)
    else:
        pool, results = None, map(_render, jobs)
    try:
        for start, xs, ys, bs in results:
            end = start + len(xs)
            views.images[start:end], views.labels[start:end], views.boxes[start:end] = xs, ys, bs
            bar.update(len(xs))
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    # A small artifact may lack a class: its scenes are dropped (the classifier has no output for it).
    order = np.asarray([artifact_classes.index(n) if n in artifact_classes else -1 for n in class_names(variant)])
    views.labels = order[views.labels]
    if (views.labels < 0).any():
        keep = views.labels >= 0
        views = RenderedViews(views.images[keep], views.labels[keep], views.boxes[keep])
    return views
