"""Does the generator learn its teacher? Preservation at 5/10/20% kept and the deletion AUC of
NICE's stored ranking and of other rankings (on the same model's classifier) on images of a
split of a `nice ingest` artifact or a builtin: on the first training images (the ones the teacher was
computed on) a student that does not match its teacher there is short of capacity, not data.

  python bench/teacher_fit.py --model M --dataset ART --split train --limit 1000 --baselines occlusion
"""

from __future__ import annotations

import argparse
import json

import torch
from nice.bundle import NiceModel
from nice.device import configure_threads
from nice.evaluate.attributions import attribute
from nice.evaluate.benchmark import RateAccuracy, explanation_scores
from nice.evaluate.suite import load_test_set
from nice.mixing import background


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a `nice ingest` artifact or a builtin")
    ap.add_argument("--split", default="train", choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--baselines", nargs="*", default=["occlusion"])
    args = ap.parse_args()
    configure_threads()
    model = NiceModel.load(args.model)
    sources, labels, _ = load_test_set(args.dataset, args.limit, split=args.split)
    ra = RateAccuracy(sources, labels, model)
    target = torch.from_numpy(ra.src_preds)
    rankings = {"nice": attribute("nice", model, ra.x, target, ra.x).scores}
    bg = background(ra.x, model.config.mixing)
    for method in args.baselines:
        rankings[method] = attribute(method, model, ra.x, target, bg).scores
    out = {}
    for method, scores in rankings.items():
        e = explanation_scores(ra, {method: scores}, {}, standard=False)[0]
        out[method] = {**{f"top {k}": v for k, v in e.preservation.items()}, "deletion_auc": e.deletion_auc}
    print(json.dumps({"split": args.split, "images": len(ra.x), **out}, indent=1))


if __name__ == "__main__":
    main()
