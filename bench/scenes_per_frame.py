"""Per-frame NICE vs Grad-CAM bytes of two `bench/scenes_levers.py --limit 500` runs (their
`frame_bytes`), by object side in view pixels and by background photo (the scenes regenerated
from their seed). Paths are those of docs/reports/scenes-levers-500; edit them for other runs."""
import json

import numpy as np
from nice.data.scenes import iter_scenes
from nice.evaluate.suite import load_test_set
n = 500
_, labels, _ = load_test_set("/work/scn/full", n)
sc = list(iter_scenes("digits", "test", n, seed=0, fit=224))
assert [s.label for s in sc] == [int(y) for y in labels], "scene order differs from the test set's"
side = np.array([max(s.box[2] - s.box[0], s.box[3] - s.box[1]) for s in sc])
photo = np.array([s.photo for s in sc])
a = np.array(json.load(open("/work/scn/pf/nice.json"))["variants"]["default"]["frame_bytes"], float)
b = np.array(json.load(open("/work/scn/pf/gradcam.json"))["variants"]["default"]["frame_bytes"], float)
print(f"all: NICE/Grad-CAM {a.sum()/b.sum():.3f}; NICE smaller on {(a<b).sum()}, larger on {(a>b).sum()}, equal {(a==b).sum()}")
for lo, hi in ((0, 16), (16, 24), (24, 32), (32, 48), (48, 999)):
    m = (side >= lo) & (side < hi)
    if m.any():
        print(f"object {lo}-{hi} px: {m.sum()} frames, NICE/Grad-CAM {a[m].sum()/b[m].sum():.3f}")
for p in sorted(set(photo)):
    m = photo == p
    print(f"{p}: {m.sum()} frames, NICE/Grad-CAM {a[m].sum()/b[m].sum():.3f}")
for lo, hi in ((0, 100), (100, 500)):
    print(f"frames {lo}-{hi}: NICE/Grad-CAM {a[lo:hi].sum()/b[lo:hi].sum():.3f}")
