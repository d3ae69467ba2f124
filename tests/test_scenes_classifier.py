"""The scenes classifier in the library (issue 18): `nice train-classifier` on a scenes artifact
trains the object-scale curriculum on scenes rendered from the artifact's generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn.utils import parameters_to_vector

from nice.checkpoint import load_classifier
from nice.config import ClassifierConfig, CurriculumConfig
from nice.data.scene_views import render_train_views
from nice.data.scenes import class_names, iter_scenes, scenes_source
from nice.device import seed_everything
from nice.ingest import DatasetArtifact
from nice.jobs import ingest_step, train_classifier_step
from nice.models import build_classifier
from nice.training.curriculum import object_crops
from nice.view import View

NICE = Path(sys.executable).parent / "nice"
TINY = {"classifier": {"image_size": 96, "width": 8},
        "train_classifier": {"curriculum": {"crop": 48, "views": 120, "crop_steps": 10, "view_steps": 3, "workers": 1}}}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("scenes") / "artifact"
    ingest_step("scenes", out, limit=12)
    return str(out)


def test_object_crops_hold_the_whole_object():
    rng = np.random.default_rng(0)
    images = np.zeros((200, 96, 96, 3), np.uint8)
    boxes = []
    for k in range(len(images)):
        side = int(rng.integers(6, 30))
        top, left = (int(v) for v in rng.integers(0, 96 - side, 2))
        images[k, top:top + side, left:left + side] = 255
        boxes.append((top, left, top + side, left + side))
    crops = object_crops(images, np.array(boxes), 32, rng)
    assert crops.shape == (200, 32, 32, 3)
    whole = [(b[2] - b[0]) ** 2 * 3 * 255 for b in boxes]
    assert [int(c.astype(np.int64).sum()) for c in crops] == whole, "every crop holds all of its object"
    # Crops are random around the object, not always at one place.
    assert len({tuple(np.argwhere(c[..., 0])[0]) for c in crops[:50]}) > 10
    # An object larger than the crop: the crop is centred on it.
    big = np.zeros((1, 96, 96, 3), np.uint8)
    big[0, 10:70, 20:80] = 255
    assert object_crops(big, np.array([(10, 20, 70, 80)]), 32, rng).min() == 255
    with pytest.raises(ValueError, match="larger than the view"):
        object_crops(big, np.array([(10, 20, 70, 80)]), 128, rng)


def test_rendered_views_are_the_artifacts_scenes_with_their_boxes_and_class_order():
    cfg = ClassifierConfig(arch="resnet", in_channels=3, image_size=96, pool="max")
    # Fashion-MNIST's source order differs from an artifact's sorted class names.
    names = sorted(class_names("fashion"))
    views = render_train_views("fashion", 20, cfg, 3, names, "photos", workers=1, progress=False)
    assert views.images.shape == (20, 96, 96, 3) and views.boxes.shape == (20, 4)
    view = View(cfg)
    for k, scene in enumerate(iter_scenes("fashion", "train", 20, 3, fit=96)):
        assert np.array_equal(views.images[k], view.apply(scene.frame)), "the same scene, at the view"
        assert names[views.labels[k]] == class_names("fashion")[scene.label], "labels in the artifact's order"
        top, left, bottom, right = views.boxes[k]
        assert 0 <= top < bottom <= 96 and 0 <= left < right <= 96
        # The object is inside its box: the view differs from the bare background only there.
        inside = np.zeros((96, 96), bool)
        inside[top:bottom, left:right] = True
        assert (np.abs(views.images[k].astype(int) - np.median(views.images[k], axis=(0, 1))).sum(-1)[inside]).max() > 60
    # A class the artifact lacks: its scenes are dropped.
    fewer = render_train_views("fashion", 20, cfg, 3, names[:5], "photos", workers=1, progress=False)
    assert len(fewer) < 20 and fewer.labels.max() < 5


def test_extra_photos_only_ever_train(tmp_path):
    """`curriculum.extra_photos`: more train backgrounds from files or folders; val and test
    keep the artifact's photos, grey or unreadable files are skipped, a wrong path is an error."""
    from PIL import Image

    folder = tmp_path / "wallpapers" / "nested"
    folder.mkdir(parents=True)
    magenta = np.zeros((400, 600, 3), np.uint8)
    magenta[..., 0] = magenta[..., 2] = 255
    Image.fromarray(magenta).save(folder / "magenta.png")
    Image.fromarray(np.full((400, 600), 128, np.uint8)).convert("RGB").save(folder / "grey.jpg")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    cfg = ClassifierConfig(arch="resnet", in_channels=3, image_size=64, pool="max")
    names = sorted(class_names("digits"))
    plain = render_train_views("digits", 40, cfg, 3, names, "photos", workers=1, progress=False)
    extra = render_train_views("digits", 40, cfg, 3, names, "photos", workers=1, progress=False,
                               extra_photos=(str(tmp_path / "wallpapers"),))

    def magenta_share(views) -> float:  # of the view's pixels: the extra photo is pure magenta
        px = views.images.reshape(len(views), -1, 3).astype(int)
        return float(((px[..., 0] > 240) & (px[..., 1] < 15) & (px[..., 2] > 240)).mean())

    assert magenta_share(plain) < 0.01 < magenta_share(extra), "the extra photo is drawn as a train background"
    assert np.array_equal(plain.labels, extra.labels), "the same objects: only the backgrounds change"
    # Val and test never see the extra photos (their photos are the artifact's, by name).
    from nice.data.scenes import folder_photos

    photos = folder_photos([str(tmp_path / "wallpapers")], max_side=128)
    assert [p.name for p in photos] == ["extra:magenta"], "grey and unreadable files are skipped"
    assert max(photos[0].pixels.shape[:2]) == 128
    val = next(iter_scenes("digits", "val", 1, 3, fit=64, extra_train=photos))
    assert val.photo != "extra:magenta" and val.photo == next(iter_scenes("digits", "val", 1, 3, fit=64)).photo
    with pytest.raises(FileNotFoundError, match="does not exist"):
        render_train_views("digits", 4, cfg, 3, names, "photos", workers=1, progress=False,
                           extra_photos=(str(tmp_path / "missing"),))
    with pytest.raises(ValueError, match="no colour photos"):
        render_train_views("digits", 4, cfg, 3, names, "photos", workers=1, progress=False,
                           extra_photos=(str(folder / "grey.jpg"),))


def test_train_classifier_on_a_scenes_artifact_runs_the_curriculum(scenes, tmp_path):
    assert scenes_source(scenes) == ("digits", 0) and scenes_source("mnist") is None
    res = train_classifier_step(scenes, tmp_path / "clf.pt", TINY)
    model, cfg, meta = load_classifier(tmp_path / "clf.pt")
    # The scenes recipe under the overrides: max pooling, no random crops, the curriculum.
    assert cfg.classifier.pool == "max" and cfg.classifier.image_size == 96 and cfg.classifier.width == 8
    assert cfg.train_classifier.augment == "none" and cfg.train_classifier.curriculum.crop == 48
    assert cfg.train_classifier.curriculum.backgrounds == "variants"
    assert set(res["metrics"]) >= {"val_accuracy", "test_accuracy", "train_loss"}
    assert res["metrics"]["steps"] == 3, "the last stage is the whole-view one"
    assert meta["class_names"] == DatasetArtifact.open(scenes).class_names
    # Trained: not the network it starts from (the same seed builds the same initial weights).
    seed_everything(cfg.train_classifier.seed)
    start = build_classifier(cfg.classifier)
    assert not torch.equal(parameters_to_vector(model.parameters()), parameters_to_vector(start.parameters()))


def test_the_curriculum_needs_object_boxes(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"train_classifier": {"curriculum": {"crop": 32}}}))
    r = subprocess.run([str(NICE), "train-classifier", "--dataset", "mnist", "--out", str(tmp_path / "c.pt"),
                        "--config", str(config)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "only a scenes artifact" in r.stderr and not (tmp_path / "c.pt").exists()
    with pytest.raises(ValueError, match="backgrounds must be one of"):
        CurriculumConfig(backgrounds="noise")


def test_the_scenes_demo_trains_the_generator_on_as_many_views_as_measured():
    """2 epochs of 10,000 frames were measured; a --limit of 500 frames trains 40 epochs (2 would
    be 8 steps: the generator collapsed in the demo)."""
    from pipeline.demo import scenes_generator_epochs

    assert scenes_generator_epochs(0) == {"train_generator": {"epochs": 2}}
    assert scenes_generator_epochs(500) == {"train_generator": {"epochs": 40}}
    assert scenes_generator_epochs(3000)["train_generator"]["epochs"] * 3000 >= 20_000
