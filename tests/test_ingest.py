"""Ingestion: sources -> validated, split, versioned Dataset artifacts."""

import io
import json

import boto3
import numpy as np
import pytest
import torch
from PIL import Image

from nice.cli import main
from nice.ingest import DatasetArtifact, IngestOptions, ingest

from conftest import png_bytes


def _jpeg(arr, **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def mnist_digits():
    from nice.data.mnist import load_split
    return load_split("mnist", "test")


def test_s3_prefix_ingest_with_rejects_and_duplicates(bucket, mnist_digits):
    s3 = boto3.client("s3")
    classes = ["cat", "dog", "ship"]
    for i in range(330):
        cls = classes[i % 3]
        rgb = np.stack([mnist_digits.images[i]] * 3, -1)
        rgb[..., i % 3] = 255 - rgb[..., i % 3]
        s3.put_object(Bucket=bucket, Key=f"data/{cls}/{i:04d}.jpg", Body=_jpeg(rgb, quality=90))
    good = _jpeg(np.zeros((28, 28, 3), np.uint8) + 90)
    s3.put_object(Bucket=bucket, Key="data/cat/corrupt.jpg", Body=good[: len(good) // 2])
    s3.put_object(Bucket=bucket, Key="data/dog/empty.png", Body=b"")
    s3.put_object(Bucket=bucket, Key="data/ship/notes.txt", Body=b"not an image at all")
    s3.put_object(Bucket=bucket, Key="data/ship/copy-of-0002.jpg",
                  Body=s3.get_object(Bucket=bucket, Key="data/ship/0002.jpg")["Body"].read())
    art = ingest(f"s3://{bucket}/data/", "/tmp/nice-test-ingest-s3", IngestOptions(progress=False))
    m = art.manifest
    assert m["class_names"] == classes and m["channels"] == 3
    assert sum(m["counts"].values()) == 330
    for split in ("train", "val", "test"):
        assert all(m["per_class"][split][c] > 0 for c in classes), "stratified: every class in every split"
    rejects = {r["key"]: r for r in art.rejects()}
    assert set(rejects) == {"cat/corrupt.jpg", "dog/empty.png", "ship/notes.txt"}
    assert "truncated" in rejects["cat/corrupt.jpg"]["reason"] or "corrupt" in rejects["cat/corrupt.jpg"]["reason"]
    assert "empty" in rejects["dog/empty.png"]["reason"]
    assert "not an image" in rejects["ship/notes.txt"]["reason"]
    assert m["duplicates"] == 1


def test_content_hash_is_stable_and_changes_with_one_file(tmp_path, mnist_digits):
    src = tmp_path / "src"
    for i in range(60):
        d = src / str(int(mnist_digits.labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i}.png").write_bytes(png_bytes(mnist_digits.images[i]))
    a = ingest(f"folder:{src}", tmp_path / "a", IngestOptions(progress=False))
    b = ingest(f"folder:{src}", tmp_path / "b", IngestOptions(progress=False))
    assert a.content_hash == b.content_hash
    victim = next(src.glob("*/0.png"))
    victim.write_bytes(png_bytes(255 - mnist_digits.images[0]))
    c = ingest(f"folder:{src}", tmp_path / "c", IngestOptions(progress=False))
    assert c.content_hash != a.content_hash
    assert a.channels == 1


def test_odd_modes_are_normalised_and_admitted(tmp_path):
    src = tmp_path / "src" / "things"
    src.mkdir(parents=True)
    base = (np.indices((40, 30)).sum(0) * 3 % 256).astype(np.uint8)
    Image.fromarray(np.stack([base] * 3, -1)).convert("CMYK").save(src / "cmyk.jpg")
    Image.fromarray(base.astype(np.uint16) * 257).save(src / "sixteen.png")
    pal = Image.fromarray(base).convert("P")
    pal.info["transparency"] = 0
    pal.save(src / "palette.png", transparency=0)
    frames = [Image.fromarray(base), Image.fromarray(255 - base)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90
    Image.fromarray(np.stack([base] * 3, -1)).save(src / "rotated.jpg", exif=exif.tobytes())
    Image.fromarray(np.stack([base] * 3, -1)).save(src / "plain.webp")
    Image.fromarray(np.stack([base] * 3, -1)).save(src / "plain.bmp")
    Image.fromarray(np.stack([base] * 3, -1)).save(src / "plain.tiff")
    art = ingest(f"folder:{tmp_path / 'src'}", tmp_path / "ds", IngestOptions(progress=False, val_fraction=0, test_fraction=0))
    assert art.manifest["rejects"] == 0 and art.manifest["counts"]["train"] == 8
    shapes = {}
    for x, _ in art.dataset("train"):
        shapes[tuple(x.shape)] = shapes.get(tuple(x.shape), 0) + 1
    assert shapes[(3, 30, 40)] == 1, "EXIF orientation applied (40x30 rotated to 30x40)"
    assert sum(shapes.values()) == 8 and all(s[0] == 3 for s in shapes)


def test_streaming_dataset_trains_like_any_source(tmp_path):
    from nice.config import colour_default
    from nice.training.classifier import train_classifier

    assert main(["ingest", "mnist-m", "--size", "32", "--limit", "120", "--out", str(tmp_path / "mm")]) == 0
    art = DatasetArtifact.open(tmp_path / "mm")
    train = art.dataset("train", shuffle=True, seed=1)
    first = [int(y) for _, y in train]
    second = [int(y) for _, y in train]
    assert sorted(first) == sorted(second) and first != second, "reshuffled every epoch"
    counts = art.manifest["counts"]
    assert len(first) == counts["train"] and counts["train"] + counts["val"] == 120 and counts["test"] == 120
    cfg = colour_default()
    cfg.classifier.width = 8
    cfg.train_classifier.epochs = 1
    res = train_classifier(cfg, train, art.dataset("test"), progress=False)
    assert len(res.history) == 1
    # The accuracy it reports is the model's on the streamed test split (recomputed here).
    from nice.data.arrays import make_loader
    from nice.training.common import predict

    preds, labels = predict(res.model, make_loader(art.dataset("test"), 128, False), torch.device("cpu"))
    assert len(labels) == counts["test"]
    assert res.final["test_accuracy"] == pytest.approx((preds == labels).float().mean().item())


@pytest.mark.slow
def test_cli_trains_both_models_on_an_artifact(tmp_path, capsys):
    assert main(["ingest", "mnist-m", "--size", "32", "--limit", "200", "--out", str(tmp_path / "mm")]) == 0
    capsys.readouterr()
    assert main(["train-classifier", "--dataset", str(tmp_path / "mm"), "--out", str(tmp_path / "clf.pt"),
                 "--epochs", "1", "--width", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    # Validated on `val` while training, tested on the held-out `test` split: both reported
    # and both the checkpoint's.
    from nice.checkpoint import read_checkpoint

    _, clf_cfg, meta = read_checkpoint(tmp_path / "clf.pt", "classifier")
    assert out["metrics"]["test_accuracy"] == meta["test_accuracy"] and "val_accuracy" in meta
    assert clf_cfg.classifier.width == 8 and clf_cfg.train_classifier.epochs == 1
    assert main(["train-mask-generator", "--dataset", str(tmp_path / "mm"), "--classifier", str(tmp_path / "clf.pt"),
                 "--out", str(tmp_path / "model"), "--epochs", "1"]) == 0
    # colour models then distil occlusion into the generator, fine-tune the classifier on
    # stored images and distil the greedy teacher of that classifier (the colour default)
    gen = json.loads(capsys.readouterr().out)
    assert {"val_accuracy_stored_before", "val_accuracy_stored_after", "stored_finetune_kept"} <= set(gen["metrics"])
    assert gen["metrics"]["teacher_seconds"] > 0 and gen["metrics"]["train_teacher"] > 0
    assert gen["metrics"]["greedy_seconds"] > 0
    from nice.bundle import NiceModel
    model = NiceModel.load(tmp_path / "model")
    assert model.config.gates.block == 8 and model.config.mixing.mode == "mean"
    assert model.config.classifier == clf_cfg.classifier and model.class_names == [str(i) for i in range(10)]
