"""Does the generator learn its teacher? Preservation at 5/10/20% kept and the deletion AUC of
NICE's stored ranking and of other rankings (on the same model's classifier) on images of a
split of a `nice ingest` artifact: on the first training images (the ones the teacher was
computed on) a student that does not match its teacher there is short of capacity, not data.

  python bench/teacher_fit.py --model M --dataset ART --split train --limit 1000 --baselines occlusion
"""

from __future__ import annotations

import argparse
import json

import pyarrow.parquet as pq
import torch
from nice.bundle import NiceModel
from nice.device import configure_threads
from nice.evaluate.attributions import attribute
from nice.evaluate.benchmark import RateAccuracy, explanation_scores
from nice.ingest import DatasetArtifact
from nice.mixing import background


def split_files(artifact: str, split: str, limit: int) -> tuple[list[bytes], list[int]]:
    """The first `limit` stored files of `split` and their labels."""
    data: list[bytes] = []
    labels: list[int] = []
    for shard in DatasetArtifact.open(artifact).shards(split):
        t = pq.read_table(shard, columns=["data", "label"])
        data += t.column("data").to_pylist()
        labels += t.column("label").to_pylist()
        if len(data) >= limit:
            break
    return data[:limit], labels[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a `nice ingest` artifact")
    ap.add_argument("--split", default="train", choices=["train", "val", "test"])
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--baselines", nargs="*", default=["occlusion"])
    args = ap.parse_args()
    configure_threads()
    model = NiceModel.load(args.model)
    ra = RateAccuracy(*split_files(args.dataset, args.split, args.limit), model)
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
