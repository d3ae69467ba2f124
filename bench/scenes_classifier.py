"""The scenes classifier recipe (issue 18): a ResNet with a max-pooled head, first trained on
object crops at the view's own scale, then on the whole view.

Trained from scratch on whole 224 px views (the object 12-45 px of them) every attempt stayed
at chance: the gradient of one small object, averaged with 48 background cells, never starts
the features. So, a curriculum that keeps the object's pixel scale:
  1. crops of `--crop` px of the rendered views, each holding the whole object (the task is
     then mnist-m-like, and learns in thousands of fast steps), on backgrounds that are the
     train photos in 8 orientations x 3 channel orders (`--backgrounds variants`);
  2. the same network (fully convolutional, global *max* pooling: the cell holding the object
     decides) on the whole view, to stop background cells firing.
Training views are rendered at the view's size (`iter_scenes(fit=...)`, the same scenes at
~1/20 of the cost of native frames) from the train photos; validation and test accuracy are
measured on the ingested artifact's native-size JPEGs through the classifier's view, the way
`nice evaluate` and the compressor see them. The output is an ordinary classifier checkpoint
(`nice train-mask-generator --classifier`, `nice evaluate --classifier`). The defaults are
the best measured recipe (docs/results.md "Scenes"): a 320 px view, 80 px crops, 30,000 views,
20,000 crop steps and 1,500 whole-view steps (107 min measured on one thread, another run sharing the 2 cores).

    .venv/bin/nice ingest scenes --out /tmp/scenes            # 10k/1k/1k native frames
    PYTHONPATH=. .venv/bin/python bench/scenes_classifier.py --dataset /tmp/scenes --out /tmp/scenes-clf.pt
    # the committed 224 px recipe: --view 224 --crop 64 --train-views 40000 --backgrounds photos
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from nice.checkpoint import load_classifier, save_checkpoint
from nice.config import ClassifierConfig, NiceConfig
from nice.data.arrays import make_loader
from nice.data.scenes import Photo, class_names, iter_scenes, named_photos, photos_by_split
from nice.ingest import DatasetArtifact
from nice.jobs import base_config
from nice.models import build_classifier
from nice.training.common import accuracy, predict
from nice.view import View


def config(width: int, view: int) -> NiceConfig:
    return base_config(3, {"classifier": {
        "arch": "resnet", "width": width, "pool": "max", "image_size": view, "view": "letterbox",
        "in_channels": 3, "num_classes": 10}})


# The train photos in every orientation of the square's symmetry group, in three channel orders
# (24 backgrounds per photo): the ~29 train photos are what limits generalisation to unseen
# ones, and the object is placed after, so digits are never flipped.
ORIENTATIONS = (lambda a: a, np.fliplr, np.flipud, lambda a: np.rot90(a, 2),
                lambda a: np.rot90(a, 1), lambda a: np.rot90(a, 3), lambda a: np.rot90(np.fliplr(a), 1),
                lambda a: np.rot90(np.fliplr(a), 3))
CHANNEL_ORDERS = ((0, 1, 2), (2, 1, 0), (1, 2, 0))


@functools.cache  # built once per render process
def backgrounds(kind: str) -> list[Photo] | None:
    """The train backgrounds: None (the split's photos as they are) or their 24 variants each;
    a variant keeps its photo's name, hence its split."""
    if kind == "photos":
        return None
    train = photos_by_split(named_photos())["train"]
    return [Photo(p.name, np.ascontiguousarray(turn(p.pixels)[..., list(order)]))
            for p in train for turn in ORIENTATIONS for order in CHANNEL_ORDERS]


def _render(job: tuple[str, int, int, ClassifierConfig, int, str]) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Views (N,S,S,3), labels and object boxes in view pixels for train scenes start..start+n."""
    variant, start, n, classifier, seed, kind = job
    view = View(classifier)
    size = view.size
    xs = np.empty((n, size, size, 3), np.uint8)
    ys = np.empty(n, np.int64)
    boxes = np.empty((n, 4), np.int64)
    scenes = iter_scenes(variant, "train", n, seed, photos=backgrounds(kind), fit=size, start=start)
    for k, scene in enumerate(scenes):
        g = view.geometry(*scene.frame.shape[:2])
        xs[k], ys[k] = view.apply(scene.frame), scene.label
        boxes[k] = np.asarray(scene.box) + np.tile(g.offset, 2)  # fit-size frame: only the letterbox offset
    return start, xs, ys, boxes


def render(variant: str, count: int, classifier: ClassifierConfig, seed: int, workers: int,
           kind: str = "photos") -> tuple[np.ndarray, ...]:
    """Filled in place (no concatenation: 40,000 views at 320 px are 12 GB)."""
    chunk = 2000
    size = classifier.image_size
    x = np.empty((count, size, size, 3), np.uint8)
    y = np.empty(count, np.int64)
    boxes = np.empty((count, 4), np.int64)
    jobs = [(variant, s, min(chunk, count - s), classifier, seed, kind) for s in range(0, count, chunk)]
    with mp.get_context("spawn").Pool(workers) as pool:
        for start, xs, ys, bs in tqdm(pool.imap_unordered(_render, jobs), total=len(jobs),
                                      desc="render train views", unit="chunk"):
            x[start:start + len(xs)], y[start:start + len(xs)], boxes[start:start + len(xs)] = xs, ys, bs
    return x, y, boxes


def crops(x: np.ndarray, boxes: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    """A random c x c crop of each view holding its whole object (centred on it when larger)."""
    size = x.shape[1]
    out = np.empty((len(x), c, c, 3), np.uint8)
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        origin = []
        for lo, hi in ((y0, y1), (x0, x1)):
            a, b = max(0, hi - c), min(lo, size - c)
            origin.append(int(rng.integers(a, b + 1)) if b >= a else min(max(0, (lo + hi - c) // 2), size - c))
        out[k] = x[k, origin[0]:origin[0] + c, origin[1]:origin[1] + c]
    return out


def _batch(x: np.ndarray) -> torch.Tensor:
    return (torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float().div_(255)
            .contiguous(memory_format=torch.channels_last))


def train_stage(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, boxes: np.ndarray, crop: int,
                steps: int, lr: float, batch: int, seed: int, name: str) -> float:
    """AdamW with a one-cycle schedule and label smoothing; returns the final running loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    rng = np.random.default_rng(seed)
    model.train()
    running = float("nan")
    with tqdm(range(steps), desc=name, unit="step") as bar:
        for step in bar:
            idx = np.sort(rng.choice(len(x), batch, replace=False))
            views = crops(x[idx], boxes[idx], crop, rng) if crop else x[idx]
            loss = F.cross_entropy(model(_batch(views)), torch.from_numpy(y[idx]), label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{running:.3f}")
    return running


def split_accuracy(model: torch.nn.Module, art: DatasetArtifact, split: str, view: View) -> float:
    """On the artifact's native-size frames, through the classifier's view."""
    return accuracy(model, make_loader(art.dataset(split, view=view), 128, False), torch.device("cpu"))


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
    p.add_argument("--variant", default="digits", choices=["digits", "fashion"])
    p.add_argument("--train-views", type=int, default=30_000, help="train scenes rendered at the view's size")
    p.add_argument("--view", type=int, default=320)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--crop", type=int, default=80)
    p.add_argument("--crop-steps", type=int, default=20_000)
    p.add_argument("--view-steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--view-lr", type=float, default=5e-4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--init", help="a scenes classifier checkpoint to go on training (longer schedules)")
    p.add_argument("--backgrounds", default="variants", choices=["photos", "variants"],
                   help="train backgrounds: the train photos, or each in 8 orientations x 3 channel orders")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    a = p.parse_args()

    torch.manual_seed(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg = config(a.width, a.view)
    view = View(cfg.classifier)
    art = DatasetArtifact.open(a.dataset)
    t0 = time.time()
    x, y, boxes = render(a.variant, a.train_views, cfg.classifier, a.seed, a.workers, a.backgrounds)
    # The artifact's classes are its folders' names, sorted; the scenes' labels are the source's
    # order (the same for digits, not for Fashion-MNIST): train in the artifact's order.
    y = np.asarray([art.class_names.index(name) for name in class_names(a.variant)])[y]
    rendered = time.time() - t0
    model = build_classifier(cfg.classifier)
    if a.init:
        start, start_cfg, _ = load_classifier(a.init)
        if start_cfg.classifier != cfg.classifier:
            raise SystemExit(f"--init {a.init}: another classifier ({start_cfg.classifier})")
        model.load_state_dict(start.state_dict())
    model = model.to(memory_format=torch.channels_last)
    stages = {}
    t1 = time.time()
    stages["crop_loss"] = train_stage(model, x, y, boxes, a.crop, a.crop_steps, a.lr, a.batch, a.seed, "crops")
    stages["crop_seconds"] = time.time() - t1
    stages["view_accuracy_after_crops"] = split_accuracy(model, art, "val", view)
    t2 = time.time()
    if a.view_steps:
        stages["view_loss"] = train_stage(model, x, y, boxes, 0, a.view_steps, a.view_lr, a.batch, a.seed + 1, "views")
    stages["view_seconds"] = time.time() - t2
    # One pass over each split's native frames gives its accuracy and its breakdown.
    breakdown = {split: split_breakdown(model, art, split, view, a.variant, int(art.manifest["seed"]))
                 for split in ("val", "test")}
    metrics = {"val_accuracy": breakdown["val"].pop("accuracy"), "test_accuracy": breakdown["test"].pop("accuracy"),
               "render_seconds": rendered, **stages}
    save_checkpoint(a.out, "classifier", model, cfg, {**metrics, "class_names": art.class_names})
    metrics.update({f"{split}_breakdown": b for split, b in breakdown.items()})
    metrics["recipe"] = vars(a)
    print(json.dumps(metrics, indent=2))
    Path(a.out).with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")


if __name__ == "__main__":
    main()
