"""`--config` means the same everywhere: a partial JSON of NiceConfig overrides merged onto the
model's config (the classifier's for train-mask-generator), the flags on top; on a grey and on
a colour model, through `compress-folder`, `compress` (S3) and `train-mask-generator`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.checkpoint import save_checkpoint
from nice.config import NiceConfig, colour_default
from nice.models import build_classifier
from pipeline.cli import main

KEEP = {"search": {"keep": [0.2, 1.0]}}
COLOUR_LADDER = (6, 15, 40)  # a non-default search ladder the colour model was "evaluated with"


def grey_config() -> NiceConfig:
    cfg = NiceConfig()
    cfg.search.formats = ("png",)  # a model whose search stores PNG, not the default WebP
    cfg.train_classifier.lr = 1e-3
    return cfg


def colour_config() -> NiceConfig:
    cfg = colour_default()
    cfg.classifier.width = 8
    cfg.classifier.num_classes = 3
    cfg.generator.pre_pool = 4
    cfg.search.qualities = COLOUR_LADDER
    cfg.train_classifier.lr = 1e-3
    return cfg


def untrained(cfg: NiceConfig, path: Path) -> Path:
    """A model directory with untrained networks: what is tested here is config handling."""
    torch.manual_seed(0)
    names = [str(i) for i in range(cfg.classifier.num_classes)]
    return NiceModel.untrained(cfg, class_names=names).save(path)


def write_images(folder: Path, colour: bool, n: int = 12, size: int = 28) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        d = folder / str(i % 3)
        d.mkdir(parents=True, exist_ok=True)
        shape = (size, size, 3) if colour else (size, size)
        # Smooth-ish content so the codecs have something to win on.
        img = (rng.integers(0, 255, shape) // 64 * 64).astype(np.uint8)
        if colour:
            Image.fromarray(img).save(d / f"{i:03d}.jpg", quality=95)
        else:
            Image.fromarray(img).save(d / f"{i:03d}.png")
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("override-models")
    return {"grey": untrained(grey_config(), root / "grey"), "colour": untrained(colour_config(), root / "colour")}


@pytest.fixture(scope="module")
def overrides_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "keep.json"
    path.write_text(json.dumps(KEEP))
    return path


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _check_rows(rows: list[dict], model_dir: Path, colour: bool, fmt: str | None = None) -> None:
    model_cfg = NiceModel.load(model_dir).config
    want = model_cfg.with_overrides(KEEP)
    if fmt:
        want = want.with_overrides({"codec": {"format": fmt}, "search": {"formats": [fmt], "native_formats": [fmt],
                                                                             "native_fallback": []}})
    assert {r["config_hash"] for r in rows} == {want.hash()}, "the overrides merged onto the model's config"
    compressed = [r for r in rows if r["status"] == "compressed"]
    assert len(compressed) >= len(rows) // 2, [r["error"] for r in rows]
    params = [json.loads(r["codec_params"]) for r in compressed]
    assert {p["keep"] for p in params} <= {0.2, 1.0}, "the file's keep levels are used"
    if colour:
        # Every other search setting is still the model's: its own quality ladder.
        assert {p["quality"] for p in params if not p.get("lossless")} <= set(COLOUR_LADDER), params
    else:
        assert {r["format_out"] for r in compressed} == {fmt or "png"}, "the model's search formats unless a flag says"


@pytest.mark.parametrize("kind", ["grey", "colour"])
def test_compress_folder_merges_config_onto_the_model(kind, models, overrides_file, tmp_path, capsys):
    src = write_images(tmp_path / "src", colour=kind == "colour", size=28 if kind == "grey" else 32)
    rc = main(["compress-folder", str(src), str(tmp_path / "dst"), "--model", str(models[kind]),
               "--config", str(overrides_file), "--batch-size", "8"])
    assert rc == 0
    summary = _summary(capsys)
    assert summary["images"] == 12
    _check_rows(pq.read_table(summary["savings_path"]).to_pylist(), models[kind], colour=kind == "colour")


def test_flags_apply_on_top_of_the_config_file(models, overrides_file, tmp_path, capsys):
    src = write_images(tmp_path / "src", colour=False)
    assert main(["compress-folder", str(src), str(tmp_path / "dst"), "--model", str(models["grey"]),
                 "--config", str(overrides_file), "--format", "webp"]) == 0
    rows = pq.read_table(_summary(capsys)["savings_path"]).to_pylist()
    _check_rows(rows, models["grey"], colour=False, fmt="webp")


@pytest.mark.parametrize("kind", ["grey", "colour"])
def test_compress_on_s3_merges_config_onto_the_model(kind, models, overrides_file, bucket, tmp_path, capsys):
    src = write_images(tmp_path / "src", colour=kind == "colour", size=28 if kind == "grey" else 32)
    s3 = boto3.client("s3")
    for p in sorted(src.rglob("*.*")):
        s3.put_object(Bucket=bucket, Key=f"in/{p.relative_to(src).as_posix()}", Body=p.read_bytes())
    rc = main(["compress", f"s3://{bucket}/in/", f"s3://{bucket}/out/", "--model", str(models[kind]),
               "--config", str(overrides_file), "--threads", "1"])
    assert rc == 0
    summary = _summary(capsys)
    body = s3.get_object(Bucket=bucket, Key=f"out/_nice/runs/{summary['run_id']}/savings.parquet")["Body"].read()
    rows = pq.read_table(io.BytesIO(body)).to_pylist()
    assert len(rows) == 12
    _check_rows(rows, models[kind], colour=kind == "colour")


def test_overriding_what_the_model_fixes_is_one_line_and_exit_2(models, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gates": {"block": 4}}))
    src = write_images(tmp_path / "src", colour=True, n=3, size=32)
    assert main(["compress-folder", str(src), str(tmp_path / "dst"), "--model", str(models["colour"]),
                 "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disagrees with the model" in err[0]
    assert not (tmp_path / "dst").exists(), "refused before anything is written"
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"search": {"kepe": [0.2]}}))
    assert main(["compress-folder", str(src), str(tmp_path / "dst"), "--model", str(models["colour"]),
                 "--config", str(typo)]) == 2
    assert "kepe" in capsys.readouterr().err


# -- train-mask-generator -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("override-data")
    assert main(["ingest", "mnist", "--limit", "60", "--out", str(root / "grey")]) == 0
    write_images(root / "colour-src", colour=True, n=45, size=32)
    assert main(["ingest", f"folder:{root / 'colour-src'}", "--out", str(root / "colour")]) == 0
    return {"grey": root / "grey", "colour": root / "colour"}


def _classifier(cfg: NiceConfig, path: Path) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(path, "classifier", build_classifier(cfg.classifier).eval(), cfg)


@pytest.mark.parametrize("kind", ["grey", "colour"])
def test_train_mask_generator_merges_config_onto_the_classifier(kind, datasets, tmp_path, capsys):
    clf_cfg = grey_config() if kind == "grey" else colour_config()
    if kind == "grey":
        clf_cfg.classifier.num_classes = 10
    clf = _classifier(clf_cfg, tmp_path / "clf.pt")
    overrides = tmp_path / "o.json"
    overrides.write_text(json.dumps({"train_generator": {"epochs": 3, "lam": 0.7, "batch_size": 32},
                                     "train_classifier": {"stored_epochs": 0}}))
    capsys.readouterr()
    rc = main(["train-mask-generator", "--dataset", str(datasets[kind]), "--classifier", str(clf),
               "--out", str(tmp_path / "model"), "--config", str(overrides), "--epochs", "1"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out)
    cfg = NiceModel.load(tmp_path / "model").config
    assert NiceConfig.from_dict(result["config"]) == cfg, "the command prints what the step saved"
    # The file's settings, the flag on top of it ...
    assert (cfg.train_generator.epochs, cfg.train_generator.lam, cfg.train_classifier.stored_epochs) == (1, 0.7, 0)
    # ... and everything else is the classifier's, not the defaults.
    assert cfg.classifier == clf_cfg.classifier and cfg.gates == clf_cfg.gates and cfg.mixing == clf_cfg.mixing
    assert cfg.train_classifier.lr == 1e-3 and cfg.search == clf_cfg.search
    assert cfg.train_generator.rank_weight == clf_cfg.train_generator.rank_weight
