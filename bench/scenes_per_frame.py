"""Per-frame bytes of two `bench/scenes_levers.py` runs on the same scenes test frames (their
`frame_bytes`), compared by frame, by object side in view pixels and by background photo (the
scenes regenerated from their seed), with the frames that decide the total.

    PYTHONPATH=. .venv/bin/python bench/scenes_per_frame.py --dataset /tmp/scenes \\
        docs/reports/scenes-levers-500/rescue/nice.json docs/reports/scenes-levers-500/rescue/gradcam.json
"""
from __future__ import annotations

import argparse
import json

import numpy as np

from nice.data.scenes import iter_scenes
from nice.evaluate.suite import load_test_set


def frames(path: str, variant: str) -> tuple[np.ndarray, np.ndarray]:
    v = json.load(open(path))["variants"][variant]
    return np.array(v["frame_bytes"], float), np.array(v["frame_keep"], float)


def predictions(model_dir: str, sources: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """The classifier's top-1 and its probability on each source through its view."""
    import torch

    from nice.bundle import NiceModel
    from nice.classify import Classify
    from nice.imageio import decode_image, image_pixels
    from nice.view import View

    model = NiceModel.load(model_dir)
    view, clf = View(model.config.classifier), Classify(model.classifier)
    preds, probs = [], []
    for k in range(0, len(sources), 50):
        views = np.stack([view.apply(image_pixels(decode_image(s).image, "RGB")) for s in sources[k:k + 50]])
        with torch.no_grad():
            p, c = clf(views)
        preds.append(p)
        probs.append(c)
    return np.concatenate(preds), np.concatenate(probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="a scenes_levers JSON (the numerator, e.g. NICE)")
    ap.add_argument("b", help="another run on the same frames (the denominator, e.g. Grad-CAM)")
    ap.add_argument("--dataset", required=True, help="the ingested scenes artifact both runs used")
    ap.add_argument("--variant", default="default")
    ap.add_argument("--view", type=int, default=224, help="the classifier's view (object sides in its pixels)")
    ap.add_argument("--worst", type=int, default=10, help="list the frames where a loses most")
    ap.add_argument("--model", help="a model directory: also split by whether its classifier is right, and by "
                    "its confidence")
    args = ap.parse_args()
    a, ka = frames(args.a, args.variant)
    b, kb = frames(args.b, args.variant)
    n = len(a)
    assert len(b) == n, "the two runs cover different frames"
    sources, labels, _ = load_test_set(args.dataset, n)
    sc = list(iter_scenes("digits", "test", n, seed=0, fit=args.view))
    assert [s.label for s in sc] == [int(y) for y in labels], "scene order differs from the test set's"
    side = np.array([max(s.box[2] - s.box[0], s.box[3] - s.box[1]) for s in sc])
    photo = np.array([s.photo for s in sc])
    print(f"all {n}: a/b {a.sum() / b.sum():.3f}; a smaller on {(a < b).sum()}, larger on {(a > b).sum()}, "
          f"equal {(a == b).sum()}; median per-frame ratio {np.median(a / b):.3f}")
    for lo, hi in ((0, 16), (16, 24), (24, 32), (32, 48), (48, 999)):
        m = (side >= lo) & (side < hi)
        if m.any():
            print(f"object {lo}-{hi} px: {m.sum()} frames, a/b {a[m].sum() / b[m].sum():.3f}")
    for p in sorted(set(photo)):
        m = photo == p
        print(f"{p}: {m.sum()} frames, a/b {a[m].sum() / b[m].sum():.3f}")
    if args.model:
        pred, conf = predictions(args.model, sources)
        right = pred == np.array(labels)
        for name, m in ((f"classifier right ({right.mean():.1%})", right), ("classifier wrong", ~right)):
            print(f"{name}: {m.sum()} frames, a/b {a[m].sum() / b[m].sum():.3f}")
        for lo, hi in ((0, 0.5), (0.5, 0.8), (0.8, 1.01)):
            m = (conf >= lo) & (conf < hi)
            if m.any():
                print(f"top-1 probability {lo}-{min(hi, 1)}: {m.sum()} frames, a/b {a[m].sum() / b[m].sum():.3f}")
    print("frames where a loses most (frame, a bytes, b bytes, a keep, b keep, object px):")
    for i in np.argsort(b - a)[:args.worst]:
        print(f"  {i} {int(a[i])} {int(b[i])} {ka[i]} {kb[i]} {side[i]}")


if __name__ == "__main__":
    main()
