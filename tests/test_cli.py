"""The command line: data, the library-only demo, config flags, and bad data/model
combinations (one line on stderr, exit 2, never a traceback)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from nice.cli import _add_config, job_config, main, overrides_from_args

ROOT = Path(__file__).resolve().parents[1]
NICE = Path(sys.executable).parent / "nice"  # the console script (pipeline.cli:main)


def test_data_fetch_offline_finds_mnist(capsys):
    from nice.data.idx import read_idx
    from nice.data.mnist import SPLIT_FILES

    assert main(["data", "fetch", "--dataset", "mnist", "--offline"]) == 0
    folder = Path(capsys.readouterr().out.strip().split("mnist: ", 1)[1])
    # The printed folder is where the loaders read: the four IDX files, readable.
    images, labels = SPLIT_FILES["test"]
    assert read_idx(next(folder.glob(images + "*"))).shape == (10000, 28, 28)
    assert read_idx(next(folder.glob(labels + "*"))).shape == (10000,)


@pytest.mark.slow
def test_demo_end_to_end_small(tmp_path, capsys):
    """The demo's whole path (train both models, export PNGs, compress, summary) on a slice."""
    argv = ["demo", "--direct", "--workdir", str(tmp_path), "--limit", "40", "--limit-train", "3000",
            "--epochs", "1", "--epochs-classifier", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for line in ("classifier test accuracy", "mask density", "accuracy on the stored compressed files",
                 "source bytes", "output bytes", "status compressed", "status kept_original"):
        assert line in out
    rows = pq.read_table(tmp_path / "savings.parquet").to_pylist()
    assert len(rows) == 40
    assert all(r["pred_output"] == r["pred_source"] for r in rows if r["status"] == "compressed")
    # A second run reuses the trained models instead of training again: the files are not
    # rewritten and it reports the same classifier.
    models = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in
              (tmp_path / "classifier.pt", tmp_path / "model" / "classifier.pt", tmp_path / "model" / "mask_generator.pt")}
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in models} == models
    accuracy = next(ln for ln in out.splitlines() if ln.startswith("classifier test accuracy"))
    assert accuracy in again.splitlines()


def _codec_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    _add_config(p, codec=True)
    return p


def test_codec_flags_choose_the_path():
    p = _codec_parser()
    default = job_config(p.parse_args([]))
    assert default.search.enabled and default.search.formats == ("webp",)
    src = job_config(p.parse_args(["--format", "source"]))
    assert src.search.enabled and src.search.formats == ("source",) and src.codec.format == "source"
    for flags in (["--fixed"], ["--quality", "60"], ["--tau", "0.3"]):
        assert not job_config(p.parse_args(flags)).search.enabled, flags
    fixed = job_config(p.parse_args(["--format", "jpeg", "--quality", "40"]))
    assert (fixed.codec.format, fixed.codec.quality, fixed.search.enabled) == ("jpeg", 40, False)


def test_config_file_is_partial_and_flags_win(tmp_path):
    from nice.config import colour_default

    path = tmp_path / "o.json"
    path.write_text(json.dumps({"search": {"keep": [0.2, 1.0]}, "codec": {"quality": 70}}))
    args = _codec_parser().parse_args(["--config", str(path), "--quality", "50"])
    assert overrides_from_args(args) == {"search": {"keep": [0.2, 1.0], "enabled": False}, "codec": {"quality": 50}}
    base = colour_default()
    cfg = job_config(args, base)
    assert cfg.search.keep == (0.2, 1.0) and cfg.codec.quality == 50 and not cfg.search.enabled
    # Everything the file does not name is the base's (here the colour defaults), not the grey ones.
    assert (cfg.gates, cfg.mixing, cfg.classifier) == (base.gates, base.mixing, base.classifier)
    assert cfg.search.qualities == base.search.qualities and cfg.codec.format == base.codec.format


def test_every_generator_arch_is_a_flag():
    from nice.config import GENERATOR_ARCHS

    p = argparse.ArgumentParser()
    _add_config(p, train=True)
    # `features` (the head on the classifier's own features) was reachable through --config only.
    for arch in GENERATOR_ARCHS:
        assert job_config(p.parse_args(["--generator", arch])).generator.arch == arch
    with pytest.raises(SystemExit):
        p.parse_args(["--generator", "unet"])


@pytest.mark.parametrize("content, message", [("[1, 2]", "expected a JSON object"), ("{oops", "not JSON")])
def test_bad_config_file_is_one_line_and_exit_2(content, message, tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["train-classifier", "--out", str(tmp_path / "c.pt"), "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and str(path) in err[0]


def _labelled_folder(root: Path, size: int, colour: bool = False, n: int = 30) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        shape = (size, size, 3) if colour else (size, size)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(d / f"{i:03d}.png")
    return root


def test_train_classifier_reads_images_of_another_size_through_its_view(tmp_path):
    """20x20 grey images under class folders, ingested, then trained with the grey default
    (LeNet): no flag about sizes; the checkpoint records the 28x28 letterbox view it saw them in."""
    import torch

    src = _labelled_folder(tmp_path / "src", 20)
    assert main(["ingest", f"folder:{src}", "--out", str(tmp_path / "ds")]) == 0
    done = subprocess.run([str(NICE), "train-classifier", "--dataset", str(tmp_path / "ds"), "--epochs", "1",
                           "--out", str(tmp_path / "clf.pt")], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    cfg = json.loads(done.stdout)["config"]["classifier"]
    assert (cfg["arch"], cfg["image_size"], cfg["view"]) == ("lenet", 28, "letterbox")
    ckpt = torch.load(tmp_path / "clf.pt", map_location="cpu", weights_only=True)
    assert json.loads(ckpt["config"])["classifier"]["image_size"] == 28


def test_a_size_free_classifier_takes_its_view_from_the_dataset(tmp_path, capsys):
    """A ResNet with image_size 0 gets the dataset's size as its view; images of several sizes
    (20x20 and 24x24) train together, each through that view."""
    _labelled_folder(tmp_path / "src", 20, n=12)
    for i in range(3):  # three 24x24 images among the 20x20 ones
        Image.fromarray(np.full((24, 24), 40 * i, np.uint8)).save(tmp_path / "src" / "class1" / f"big{i}.png")
    assert main(["ingest", f"folder:{tmp_path / 'src'}", "--out", str(tmp_path / "ds")]) == 0
    fix = tmp_path / "resnet.json"
    fix.write_text(json.dumps({"classifier": {"arch": "resnet", "image_size": 0, "width": 8},
                               "train_classifier": {"epochs": 1}}))
    capsys.readouterr()
    assert main(["train-classifier", "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "clf.pt"),
                 "--config", str(fix)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["config"]["classifier"]["image_size"] == 24 and res["class_names"] == ["class0", "class1", "class2"]


@pytest.mark.parametrize("case", ["colour data, grey classifier", "wrong class count"])
def test_train_mask_generator_on_data_the_classifier_cannot_take_is_exit_2(case, tmp_path, capsys):
    from nice.checkpoint import save_checkpoint
    from nice.config import NiceConfig
    from nice.models import build_classifier

    colour, size, classes = {"colour data, grey classifier": (True, 28, 3), "wrong class count": (False, 28, 10)}[case]
    src = _labelled_folder(tmp_path / "src", size, colour=colour)
    assert main(["ingest", f"folder:{src}", "--out", str(tmp_path / "ds")]) == 0
    cfg = NiceConfig()
    cfg.classifier.num_classes = classes
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "clf.pt", "classifier", build_classifier(cfg.classifier), cfg)
    capsys.readouterr()
    assert main(["train-mask-generator", "--dataset", str(tmp_path / "ds"), "--classifier", str(tmp_path / "clf.pt"),
                 "--out", str(tmp_path / "model"), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: dataset "), err
    want = {"colour data, grey classifier": "colour (3 channels)",
            "wrong class count": "3 classes"}[case]
    assert want in err[0]
    assert not (tmp_path / "model").exists()


@pytest.mark.parametrize("case", ["colour data, grey model", "wrong class count"])
def test_evaluate_on_data_the_model_cannot_take_is_exit_2(case, tmp_path, capsys):
    """A data/model mismatch at evaluation is one line and exit 2, before any report is written."""
    from nice.bundle import NiceModel
    from nice.config import NiceConfig

    colour = case == "colour data, grey model"
    src = _labelled_folder(tmp_path / "src", 28, colour=colour)
    assert main(["ingest", f"folder:{src}", "--out", str(tmp_path / "ds")]) == 0
    cfg = NiceConfig()
    cfg.classifier.num_classes = 3 if colour else 10
    torch.manual_seed(0)
    NiceModel.untrained(cfg).save(tmp_path / "model", {})
    capsys.readouterr()
    # An artifact; for the class count also a labelled folder (it has no channel metadata: the
    # view converts each image, as the compressor does).
    for dataset in [str(tmp_path / "ds")] + ([] if colour else [str(src)]):
        assert main(["evaluate", "--model", str(tmp_path / "model"), "--dataset", dataset,
                     "--out", str(tmp_path / "ev"), "--no-track"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: dataset "), err
        assert ("colour (3 channels)" if colour else "3 classes") in err[0]
        assert not (tmp_path / "ev").exists()
