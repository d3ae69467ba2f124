"""Scenes (issue 18): one small object in a real photo at native size, its ingestion, and the
cached views training reads."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nice.data.arrays import ViewCache
from nice.data.scenes import FRAME_SIZES, SPLITS, iter_scenes, named_photos, photos_by_split, place_object
from nice.data.sources import training_data
from nice.ingest import DatasetArtifact
from nice.config import ClassifierConfig
from nice.view import View

NICE = Path(sys.executable).parent / "nice"


@pytest.fixture(scope="module")
def photos():
    return named_photos()


def test_background_photos_are_disjoint_across_splits(photos):
    by = photos_by_split(photos)
    names = {s: {p.name for p in by[s]} for s in SPLITS}
    assert all(names[s] for s in SPLITS), "every split has its own photos"
    assert not (names["train"] & names["val"]) and not (names["train"] & names["test"]) \
        and not (names["val"] & names["test"])
    # The split of a photo depends on its name only, not on what else is installed.
    fewer = photos_by_split([p for p in photos if not p.name.startswith("opencv:")])
    moved = sum(p.name not in names[s] for s in SPLITS for p in fewer[s])
    assert moved <= 2, "only the fallback that gives an empty split a photo moves one"


def test_scenes_are_native_sized_deterministic_and_labelled(photos):
    a = list(iter_scenes("digits", "test", 12, seed=3, photos=photos))
    b = list(iter_scenes("digits", "test", 12, seed=3, photos=photos))
    assert all(np.array_equal(x[0], y[0]) and x[1:] == y[1:] for x, y in zip(a, b)), "deterministic for a seed"
    first6 = list(iter_scenes("digits", "test", 6, seed=3, photos=photos))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(first6, a)), "a scene does not depend on the count"
    other = next(iter_scenes("digits", "test", 1, seed=4, photos=photos))
    assert not np.array_equal(other[0], a[0][0])
    sizes = {(s.frame.shape[1], s.frame.shape[0]) for s in a}
    allowed = set(FRAME_SIZES) | {(h, w) for w, h in FRAME_SIZES}
    assert sizes <= allowed and len(sizes) >= 3, sizes
    test_photos = {p.name for p in photos_by_split(photos)["test"]}
    assert {s.photo for s in a} <= test_photos
    assert all(0 <= s.label < 10 for s in a)
    # The box is the object's square: inside the frame, and where the frame differs from the photo.
    for s in a:
        top, left, bottom, right = s.box
        assert 0 <= top < bottom <= s.frame.shape[0] and 0 <= left < right <= s.frame.shape[1]
    fashion = next(iter_scenes("fashion", "train", 1, photos=photos))
    assert fashion[0].ndim == 3 and 0 <= fashion[1] < 10


def test_the_object_is_small_and_visible():
    rng = np.random.default_rng(0)
    bg = np.full((600, 800, 3), 200, np.uint8)
    digit = np.zeros((28, 28), np.uint8)
    digit[4:24, 10:18] = 255
    out, (top, left, bottom, right) = place_object(bg, digit, rng)
    changed = np.argwhere(np.abs(out.astype(int) - bg).sum(-1) > 60)
    assert (changed.min(0) >= (top, left)).all() and (changed.max(0) < (bottom, right)).all(), "the box holds the object"
    side = changed.max(0) - changed.min(0) + 1
    assert 0.02 * 600 < side.max() <= 0.30 * 600, "10-30% of the shorter side (the stroke's extent within it)"
    assert out[changed[:, 0], changed[:, 1]].mean(-1).min() < 100, "dark on a light photo"


def test_ingest_scenes_keeps_the_official_splits_as_native_jpeg(tmp_path):
    out = tmp_path / "scenes"
    r = subprocess.run([str(NICE), "ingest", "scenes", "--limit", "5", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    art = DatasetArtifact.open(out)
    assert art.manifest["counts"] == {"train": 5, "val": 5, "test": 5}
    assert art.channels == 3 and set(art.class_names) <= {str(i) for i in range(10)}
    import pyarrow.parquet as pq

    rows = pq.read_table(art.shards("test")[0]).to_pylist()
    assert {r["format"] for r in rows} == {"jpeg"}
    assert all(r["key"].startswith("test/") for r in rows)
    with Image.open(io.BytesIO(rows[0]["data"])) as img:
        assert img.size in set(FRAME_SIZES) | {(h, w) for w, h in FRAME_SIZES}
    # Same seed, same content: the dataset's version is reproducible.
    again = tmp_path / "again"
    subprocess.run([str(NICE), "ingest", "scenes", "--limit", "5", "--out", str(again)], check=True,
                   capture_output=True, timeout=600)
    assert DatasetArtifact.open(again).content_hash == art.content_hash

    # Training reads each view once: the cache holds exactly the streamed views.
    view = View(ClassifierConfig(arch="resnet", in_channels=3, image_size=64))
    train, val, names, channels = training_data(str(out), view=view)
    assert isinstance(train, ViewCache) and isinstance(val, ViewCache) and len(train) == 5
    streamed = list(art.dataset("val", view=view))
    for (x, y), (xc, yc) in zip(streamed, (val[i] for i in range(len(val)))):
        assert int(y) == int(yc) and torch.equal(x, xc)
    # Augmented training streams (a crop is random every epoch).
    from nice.config import ClassifierTrainConfig
    from nice.view import Augment

    aug = Augment.of(view, ClassifierTrainConfig(augment="crop"))
    train_aug, _, _, _ = training_data(str(out), view=view, augment=aug)
    assert not isinstance(train_aug, ViewCache)


def test_the_demo_archive_is_the_ingested_test_split(tmp_path):
    """`nice demo --dataset scenes` seeds its archive with the same bytes ingestion stores."""
    from nice.data.scenes import export_folder
    from nice.ingest.sources import scene_records

    out = export_folder("digits", "test", 3, tmp_path / "archive")
    files = sorted(p for p in out.rglob("*.jpg"))
    assert len(files) == 3
    records = [r for r in scene_records("scenes", limit=3) if r.split == "test"]
    by_name = {Path(r.key).name: r for r in records}
    for f in files:
        r = by_name[f.name]
        assert f.parent.name == r.label and f.read_bytes() == r.data
