"""The lowest deletion AUC (stored background) any ranking with inert blocks last can reach on a
grey set (docs/results.md, issue 20): removed blocks take the stored background, so once every
live block (one that differs from it) is gone the image is the background alone and the class
keeps p(source | background). The bound takes probability 0 while any live block remains.

  python bench/deletion_floor.py --model M --dataset mnist --limit 1000
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from nice.bundle import NiceModel
from nice.device import configure_threads
from nice.evaluate.benchmark import RateAccuracy
from nice.evaluate.suite import load_test_set
from nice.mixing import background
from nice.ranking import live_blocks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=10, help="the evaluation's deletion steps")
    args = ap.parse_args()
    configure_threads()
    model = NiceModel.load(args.model)
    sources, labels, _ = load_test_set(args.dataset, args.limit)
    ra = RateAccuracy(sources, labels, model)
    live = live_blocks(ra.x, model.config).float().mean((1, 2)).numpy()
    src = torch.from_numpy(ra.src_preds)[:, None]
    p_source = ra.clf.probs(ra.x).gather(1, src).numpy()[:, 0]
    p_background = ra.clf.probs(background(ra.x, model.config.mixing)).gather(1, src).numpy()[:, 0]
    xs = np.linspace(0, 1, args.steps + 1)
    curve = np.stack([np.where(f == 0, p_source, np.where(live <= f, p_background, 0.0)) for f in xs], 1)
    print(json.dumps({"images": len(live), "live_fraction_mean": float(live.mean()),
                      "live_fraction_p90": float(np.percentile(live, 90)),
                      "p_source_given_background_mean": float(p_background.mean()),
                      "deletion_auc_floor": float(np.trapezoid(curve.mean(0), xs))}, indent=1))


if __name__ == "__main__":
    main()
