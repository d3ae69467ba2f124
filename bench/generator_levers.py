"""Levers of issue 20 on a trained NICE model: fine-tune its generator (its classifier, already
fine-tuned on stored images, stays frozen and unchanged) with other rank-loss settings, and
write a new model directory to measure with `nice evaluate` against the original.

  python bench/generator_levers.py --model M --dataset DS --out OUT --rank-weight 4 \
      --rank-keep 0.05 0.1 0.2 --epochs 1 --limit 20000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from nice.bundle import NiceModel
from nice.data.sources import training_data
from nice.device import configure_threads
from nice.training.mask_generator import train_mask_generator
from nice.view import View


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a builtin (mnist, fashion-mnist): `--limit` applies")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank-weight", type=float, default=None)
    ap.add_argument("--rank-keep", type=float, nargs="+", default=None)
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=20000, help="training images (0 = all)")
    args = ap.parse_args()
    configure_threads()
    model = NiceModel.load(args.model)
    tg = {"epochs": args.epochs, "lr": args.lr}
    if args.rank_weight is not None:
        tg["rank_weight"] = args.rank_weight
    if args.rank_keep:
        tg["rank_keep"] = tuple(args.rank_keep)
    if args.lam is not None:
        tg["lam"] = args.lam
    cfg = model.config.with_overrides({"train_generator": tg})
    train, val, names, _ = training_data(args.dataset, limit=args.limit or None, view=View.of(cfg.classifier))
    res = train_mask_generator(cfg, model.classifier, train, val, init=model.generator)
    out = NiceModel(model.classifier, res.model, cfg, class_names=model.class_names or names)
    out.save(args.out, res.final)
    print(json.dumps({"out": str(Path(args.out)), **res.final}, indent=1))


if __name__ == "__main__":
    main()
