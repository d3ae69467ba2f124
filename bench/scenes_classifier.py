"""The scenes classifier's breakdown (issue 18): `nice train-classifier`'s scenes recipe (the
object-scale curriculum, `nice.training.curriculum`) with its settings as flags, then the
accuracy per background photo and per object side in view pixels.

`nice train-classifier --dataset SCENES` trains the same recipe (`nice.data.scenes.TRAINING_OVERRIDES`:
a 320 px view, 80 px crops on 24 variants of each train photo, 30,000 views, 20,000 crop steps
and 1,500 whole-view steps; 107 min measured on one thread, another run sharing the 2 cores).
This script only adds the breakdown and a JSON of the recipe and its numbers.

    .venv/bin/nice ingest scenes --out /tmp/scenes            # 10k/1k/1k native frames
    PYTHONPATH=. .venv/bin/python bench/scenes_classifier.py --dataset /tmp/scenes --out /tmp/scenes-clf.pt
    # one thread: taskset -c 0 ... (the job uses the cores it is given)
    # the short 224 px recipe of the rate reports: --view 224 --crop 64 --train-views 20000 \
    #     --crop-steps 8000 --view-steps 800 --backgrounds photos
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nice.checkpoint import load_classifier
from nice.data.arrays import make_loader
from nice.data.scenes import iter_scenes, scenes_source
from nice.ingest import DatasetArtifact
from nice.jobs import StepContext, train_classifier_step
from nice.training.common import predict
from nice.view import View


def split_breakdown(model: torch.nn.Module, art: DatasetArtifact, split: str, view: View,
                    variant: str, seed: int) -> dict[str, Any]:
    """Accuracy, and accuracy per background photo and per object side in view pixels (the
    scenes are regenerated from the seed, the artifact's frames are what is classified)."""
    preds, labels = predict(model, make_loader(art.dataset(split, view=view), 128, False), torch.device("cpu"))
    right = (preds == labels).numpy()
    scenes = list(iter_scenes(variant, split, len(right), seed))
    side = np.array([(s.box[2] - s.box[0]) * view.size / max(s.frame.shape[:2]) for s in scenes])
    photos = np.array([s.photo for s in scenes])
    by_size = {f"{lo}-{hi}px": float(right[(side >= lo) & (side < hi)].mean())
               for lo, hi in ((0, 16), (16, 24), (24, 32), (32, 48), (48, 10_000)) if ((side >= lo) & (side < hi)).any()}
    return {"accuracy": float(right.mean()), "by_photo": {p: float(right[photos == p].mean()) for p in sorted(set(photos))},
            "by_object_side": by_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="a scenes Dataset artifact (nice ingest scenes)")
    p.add_argument("--out", required=True, help="the classifier checkpoint to write")
    p.add_argument("--train-views", type=int, help="train scenes rendered at the view's size")
    p.add_argument("--view", type=int)
    p.add_argument("--width", type=int)
    p.add_argument("--crop", type=int)
    p.add_argument("--crop-steps", type=int)
    p.add_argument("--view-steps", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--view-lr", type=float)
    p.add_argument("--batch", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    p.add_argument("--init", help="a scenes classifier checkpoint to go on training (longer schedules)")
    p.add_argument("--backgrounds", choices=["photos", "variants"],
                   help="train backgrounds: the train photos, or each in 8 orientations x 3 channel orders")
    p.add_argument("--extra-photos", nargs="+", help="train-only background photos: files or folders")
    a = p.parse_args()

    scenes = scenes_source(a.dataset)
    if scenes is None:
        raise SystemExit(f"{a.dataset} is not a scenes artifact (nice ingest scenes)")
    flags = {"classifier": {"image_size": a.view, "width": a.width},
             "train_classifier": {"lr": a.lr, "batch_size": a.batch, "seed": a.seed, "curriculum": {
                 "crop": a.crop, "crop_steps": a.crop_steps, "view_steps": a.view_steps, "view_lr": a.view_lr,
                 "views": a.train_views, "backgrounds": a.backgrounds, "workers": a.workers,
                 "extra_photos": a.extra_photos}}}
    prune = lambda d: {k: prune(v) if isinstance(v, dict) else v for k, v in d.items() if v is not None}  # noqa: E731
    result = train_classifier_step(a.dataset, a.out, prune(flags), StepContext(), weights=a.init)
    model, cfg, _ = load_classifier(a.out)
    art = DatasetArtifact.open(a.dataset)
    breakdown = {split: split_breakdown(model, art, split, View(cfg.classifier), *scenes) for split in ("val", "test")}
    metrics = {**result["metrics"], **{f"{split}_breakdown": b for split, b in breakdown.items()},
               "recipe": {"classifier": result["config"]["classifier"],
                          "train_classifier": result["config"]["train_classifier"]}}
    print(json.dumps(metrics, indent=2))
    Path(a.out).with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
