"""Per-frame bytes of two `bench/scenes_levers.py` runs on the same scenes test frames (their
`frame_bytes`), compared by frame, by object side in view pixels and by background photo (the
scenes regenerated from their seed), with the frames that decide the total.

    PYTHONPATH=. .venv/bin/python bench/scenes_per_frame.py --dataset /tmp/scenes \\
        docs/reports/scenes-levers-500/nice.json docs/reports/scenes-levers-500/gradcam.json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="a scenes_levers JSON (the numerator, e.g. NICE)")
    ap.add_argument("b", help="another run on the same frames (the denominator, e.g. Grad-CAM)")
    ap.add_argument("--dataset", required=True, help="the ingested scenes artifact both runs used")
    ap.add_argument("--variant", default="default")
    ap.add_argument("--view", type=int, default=224, help="the classifier's view (object sides in its pixels)")
    ap.add_argument("--worst", type=int, default=10, help="list the frames where a loses most")
    args = ap.parse_args()
    a, ka = frames(args.a, args.variant)
    b, kb = frames(args.b, args.variant)
    n = len(a)
    assert len(b) == n, "the two runs cover different frames"
    _, labels, _ = load_test_set(args.dataset, n)
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
    print("frames where a loses most (frame, a bytes, b bytes, a keep, b keep, object px):")
    for i in np.argsort(b - a)[:args.worst]:
        print(f"  {i} {int(a[i])} {int(b[i])} {ka[i]} {kb[i]} {side[i]}")


if __name__ == "__main__":
    main()
