"""Issue 20's speed goal as ratios measured in one run: ms per image of NICE, occlusion and
integrated gradients through `nice.evaluate.attributions.attribute` (the evaluation's own
path, every method on the same tuned networks), on the default architectures and the
features head on LeNet, with random weights (the timing depends on the networks, not the
weights), best of 3.

  PYTHONPATH=. .venv/bin/python bench/explain_speed.py --threads 1
"""

from __future__ import annotations

import argparse
import json

import torch

from nice.bundle import NiceModel
from nice.config import NiceConfig, colour_default
from nice.evaluate.attributions import attribute


def lenet_features(width: int) -> NiceConfig:
    """The grey default with the features head on LeNet at `width`."""
    return NiceConfig().with_overrides({"generator": {"arch": "features", "width": width}})


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    out = {}
    for name, cfg, shape, n in [("mnist", NiceConfig(), (1, 28, 28), 512),
                                *((f"mnist-lenet-features-w{w}", lenet_features(w), (1, 28, 28), 512)
                                  for w in (16, 8, 4)),
                                ("colour64", colour_default(64), (3, 64, 64), 256)]:
        model = NiceModel.untrained(cfg, uri="")
        x = torch.rand((n, *shape))
        with torch.no_grad():
            target = model.classifier(x).argmax(1)
        bg = torch.zeros_like(x)
        row = {}
        for method in ("nice", "occlusion", "integrated_gradients"):
            k = n if method == "nice" else 128
            row[method] = min(attribute(method, model, x[:k], target[:k], bg[:k]).seconds_per_image
                              for _ in range(a.repeats)) * 1000
        row["occlusion/nice"] = row["occlusion"] / row["nice"]
        row["integrated_gradients/nice"] = row["integrated_gradients"] / row["nice"]
        out[name] = {k: round(v, 3) for k, v in row.items()}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
