"""The main job on one machine: train the classifier and the NICE mask generator on MNIST,
then compress the MNIST test split (as PNG files) into another folder and report."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nice.bundle import NiceModel
from nice.checkpoint import load_classifier, save_checkpoint
from nice.compress.folder import RunSummary, compress_folder
from nice.config import NiceConfig
from nice.data.arrays import make_loader
from nice.data.sources import export_png_folder, load_builtin
from nice.device import configure_threads, pick_device
from nice.training.classifier import train_classifier
from nice.training.mask_generator import evaluate_masks
from nice.training.phases import train_phases

log = logging.getLogger(__name__)


@dataclass
class DemoResult:
    classifier_accuracy: float
    masks: dict[str, float]
    compression: RunSummary
    model_dir: Path


def run_demo(workdir: str | Path, cfg: NiceConfig | None = None, dataset: str = "mnist",
             limit_test: int | None = None, limit_train: int | None = None, reuse: bool = True,
             progress: bool = True) -> DemoResult:
    cfg = cfg or NiceConfig()
    configure_threads()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train_ds, _ = load_builtin(dataset, "train", limit=limit_train)
    test_ds, test_split = load_builtin(dataset, "test", limit=limit_test)

    clf_path = workdir / "classifier.pt"
    if reuse and clf_path.is_file():
        classifier, _, meta = load_classifier(clf_path)
        clf_acc = float(meta["test_accuracy"])
        log.info("reusing classifier %s (accuracy %.4f)", clf_path, clf_acc)
    else:
        res = train_classifier(cfg, train_ds, test_ds, progress=progress)
        classifier, clf_acc = res.model, float(res.final["test_accuracy"])
        save_checkpoint(clf_path, "classifier", classifier, cfg, {"test_accuracy": clf_acc})

    model_dir = workdir / "model"
    if reuse and (model_dir / "mask_generator.pt").is_file():
        model = NiceModel.load(model_dir)
    else:
        done = train_phases(cfg, classifier, train_ds, test_ds, progress=progress)  # the job's phases
        model = NiceModel(classifier=done.classifier, generator=done.generator, config=cfg,
                          class_names=test_split.class_names)
        model.save(model_dir, {"classifier_test_accuracy": clf_acc})
        model = NiceModel.load(model_dir)
    masks = evaluate_masks(model.classifier, model.generator, cfg, make_loader(test_ds, 512, False),
                           pick_device("cpu"))

    src = export_png_folder(test_split, workdir / f"{dataset}-test-png", limit_test)
    summary = compress_folder(src, workdir / "compressed", model, cfg,
                              class_names=test_split.class_names,
                              savings=workdir / "savings.parquet", progress=progress)
    return DemoResult(classifier_accuracy=clf_acc, masks=masks, compression=summary, model_dir=model_dir)


def format_summary(res: DemoResult) -> str:
    c = res.compression
    rows: list[tuple[str, Any]] = [
        ("classifier test accuracy", f"{res.classifier_accuracy * 100:.2f}%"),
        ("mask density (binarised, tau={:.2f})".format(res.masks["tau"]), f"{res.masks['density'] * 100:.2f}% of pixels"),
        ("accuracy on x*z (masked test images)", f"{res.masks['accuracy_mixed'] * 100:.2f}%"),
        ("accuracy on the stored compressed files", f"{(c.accuracy_output or 0) * 100:.2f}%"),
        ("source bytes (PNG originals)", f"{c.source_bytes:,}"),
        ("output bytes", f"{c.output_bytes:,}"),
        ("bytes ratio (output / source)", f"{c.bytes_ratio:.3f}"),
        ("prediction flips on compressed rows", c.prediction_flips),
    ] + [(f"status {k}", v) for k, v in c.counts.items()] + [
        ("savings table", c.savings_path),
        ("model", str(res.model_dir)),
    ]
    width = max(len(k) for k, _ in rows)
    lines = ["NICE demo summary", "=" * (width + 30)]
    lines += [f"{k.ljust(width)}  {v}" for k, v in rows]
    return "\n".join(lines)
