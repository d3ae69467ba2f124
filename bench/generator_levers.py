"""Levers of issue 20 on a trained NICE model: fine-tune its generator (its classifier, already
fine-tuned on stored images, stays frozen and unchanged; or, with `--classifier`, against the
plain classifier with the stored fine-tune re-run after it, as the product trains) with other
rank-loss settings or a distilled teacher ranking, write the new model directory, and measure
it and the original on the same test images: preservation at 5/10/20% kept with the ranking the
search stores, the deletion/insertion AUC on the stored background, and the bytes ratio of the
per-image search.

  python bench/generator_levers.py --model M --dataset mnist --out OUT --rank-weight 4 \
      --rank-keep 0.05 0.1 0.2 --epochs 1 --limit 20000
  python bench/generator_levers.py --model M --dataset mnist --out OUT \
      --teacher integrated_gradients --teacher-weight 1 --limit 20000 --measure 1000
  python bench/generator_levers.py --model M --dataset mnist --out OUT --rank-smooth-px 1 \
      --mu 1 --limit 20000 --measure 1000
  python bench/generator_levers.py --model M --dataset ART --classifier C --out OUT --teacher occlusion \
      --teacher-cache occ.pt --teacher-loss listwise --teacher-weight 4 --epochs 10 --limit 12000 \
      --measure 1000 --baselines occlusion integrated_gradients
  python bench/generator_levers.py --model M --dataset mnist --out OUT --deletion-weight 1 \
      --limit 20000 --measure 1000
  python bench/generator_levers.py --model M --dataset mnist --out OUT --teacher occlusion --greedy-steps 3 \
      --greedy-cell 4 --greedy-base nice --teacher-cache G.pt --teacher-loss listwise --teacher-weight 4 \
      --epochs 30 --limit 3000 --measure 1000
  python bench/generator_levers.py --model M --dataset SCENES --out OUT --generator '{"arch": "features"}' \
      --lr 2e-3 --epochs 2 --set '{"train_generator": {"task_loss": "ce"}}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from nice.bundle import NiceModel
from nice.checkpoint import load_classifier
from nice.config import merge_overrides
from nice.data.sources import BUILTIN, training_data
from nice.device import configure_threads
from nice.training.mask_generator import train_mask_generator
from nice.training.stored import train_for_storage
from nice.training.teacher import GREEDY_BASES, TEACHERS, WithTeacher, first_images, greedy_teacher, teacher_scores
from nice.view import View


def measure(model: NiceModel, spec: str, limit: int, baselines: tuple[str, ...] = ()) -> dict[str, object]:
    """What the lever is for, on the first `limit` test images; and `baselines` (other rankings)
    on the same images and the same classifier: a lever re-runs the stored fine-tune, which
    changes the classifier every ranking is measured on."""
    from nice.evaluate.attributions import attribute
    from nice.evaluate.benchmark import RateAccuracy, explanation_scores
    from nice.evaluate.suite import load_test_set
    from nice.mixing import background

    sources, labels, _ = load_test_set(spec, limit)
    ra = RateAccuracy(sources, labels, model)
    target = torch.from_numpy(ra.src_preds)
    scores = attribute("nice", model, ra.x, target, ra.x).scores  # no background used

    def faithfulness(method: str, s: torch.Tensor) -> dict[str, float]:
        e = explanation_scores(ra, {method: s}, {}, standard=False)[0]
        return {**{f"top {k}": v for k, v in e.preservation.items()}, "deletion_auc": e.deletion_auc,
                "insertion_auc": e.insertion_auc}

    point = ra.ranked("nice", "per-image search", scores)
    out: dict[str, object] = {**faithfulness("nice", scores), "search_bytes_ratio": point.bytes_ratio,
                              "search_flips": point.flips}
    bg = background(ra.x, model.config.mixing)
    for method in baselines:
        out[method] = faithfulness(method, attribute(method, model, ra.x, target, bg).scores)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True, help="a builtin (mnist, fashion-mnist): `--limit` applies")
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank-weight", type=float, default=None)
    ap.add_argument("--rank-keep", type=float, nargs="+", default=None)
    ap.add_argument("--deletion-weight", type=float, default=None,
                    help="weight of the deletion term (the source class's probability with the top blocks removed)")
    ap.add_argument("--deletion-levels", type=float, nargs="+", default=None)
    ap.add_argument("--lam", type=float, default=None)
    ap.add_argument("--mu", type=float, default=None, help="compactness: the TV weight on the gate probabilities")
    ap.add_argument("--rank-smooth-px", type=int, default=None,
                    help="search.rank_smooth_px of the new model: what the rank loss, the distillation and its search cut")
    ap.add_argument("--teacher", choices=TEACHERS, default=None, help="distil this ranking into the generator")
    ap.add_argument("--teacher-weight", type=float, default=1.0)
    ap.add_argument("--teacher-loss", choices=["topk", "listwise"], default=None,
                    help="train_generator.teacher_loss: the BCE at the cut-off or the KL over all blocks")
    ap.add_argument("--teacher-cache", default=None,
                    help="a .pt file of the teacher's scores: read when it exists, written after computing "
                         "(occlusion costs ~0.1 s an image; several levers share one)")
    ap.add_argument("--greedy-steps", type=int, default=0,
                    help="with --teacher: distil the greedy teacher of the model's own classifier instead "
                         "(nice.training.teacher.greedy_teacher; the product's greedy phase)")
    ap.add_argument("--greedy-cell", type=int, default=1, help="greedy: candidate cells of N x N gate blocks")
    ap.add_argument("--greedy-base", choices=GREEDY_BASES, default="occlusion", help="greedy: the order after the cells")
    ap.add_argument("--generator", default=None,
                    help='JSON override of the generator section, e.g. \'{"arch": "features"}\': trained from scratch')
    ap.add_argument("--set", default=None, help="a partial config (JSON) merged over the lever's, e.g. "
                    "'{\"train_generator\": {\"task_loss\": \"ce\"}}' or '{\"gates\": {\"block\": 4}}'")
    ap.add_argument("--scratch", action="store_true",
                    help="train the generator from scratch (the control for --generator, which always does)")
    ap.add_argument("--classifier", default=None,
                    help="the plain classifier the model's was fine-tuned from (train-classifier's output): the "
                         "lever's generator trains against it and the stored fine-tune is re-run after it, as "
                         "`nice train-mask-generator` does; without it the generator trains against the model's "
                         "classifier, which is co-adapted to the old generator's stored images")
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--limit", type=int, default=None,
                    help="training images (a builtin set: default 20000, 0 = all; an artifact: its whole train "
                         "split unless given, then its first N train images, held in memory)")
    ap.add_argument("--measure", type=int, default=0, help="measure both models on the first N test images")
    ap.add_argument("--baselines", nargs="+", choices=TEACHERS, default=(),
                    help="with --measure: these rankings too, on each model's own classifier")
    args = ap.parse_args()
    if args.dataset in BUILTIN:
        args.limit = 20000 if args.limit is None else args.limit
    configure_threads()
    model = NiceModel.load(args.model)
    tg = {"epochs": args.epochs, "lr": args.lr}
    if args.rank_weight is not None:
        tg["rank_weight"] = args.rank_weight
    if args.rank_keep:
        tg["rank_keep"] = tuple(args.rank_keep)
    if args.deletion_weight is not None:
        tg["deletion_weight"] = args.deletion_weight
    if args.deletion_levels:
        tg["deletion_levels"] = tuple(args.deletion_levels)
    if args.lam is not None:
        tg["lam"] = args.lam
    if args.mu is not None:
        tg["mu"] = args.mu
    if args.teacher:
        tg["teacher_weight"] = args.teacher_weight
        if args.teacher_loss:
            tg["teacher_loss"] = args.teacher_loss
    over: dict[str, dict] = {"train_generator": tg}
    if args.rank_smooth_px is not None:
        over["search"] = {"rank_smooth_px": args.rank_smooth_px}
    if args.generator:
        over["generator"] = json.loads(args.generator)
    over = merge_overrides(over, json.loads(args.set)) if args.set else over
    cfg = model.config.with_overrides(over)
    same = cfg.generator == model.config.generator and cfg.gates == model.config.gates
    init = model.generator if same and not args.scratch else None  # another architecture or gate grid: from scratch
    train, val, names, _ = training_data(args.dataset, limit=args.limit or None, view=View.of(cfg.classifier))
    if args.dataset not in BUILTIN and args.limit:
        train = first_images(train, args.limit)
    # The stored fine-tune reads (x, y) items, not a teacher's. Re-run (--classifier), it sees the
    # whole train split as in the product: on a subset its keep gate can refuse it (Fashion-MNIST at
    # 12,000 images), which would measure the plain classifier instead. Read again only where a
    # subset was taken (an artifact's views are decoded once otherwise).
    whole = args.classifier and args.limit
    plain = training_data(args.dataset, view=View.of(cfg.classifier))[0] if whole else train
    report: dict[str, object] = {"out": str(Path(args.out)), **over}
    if args.teacher:
        t0 = time.perf_counter()
        cache = Path(args.teacher_cache) if args.teacher_cache else None
        record = cache.with_name(cache.name + ".json") if cache is not None else None
        # What the cache holds, beside it: a cache of another teacher or other images is refused.
        made = {"teacher": args.teacher, "greedy_steps": args.greedy_steps, "model": str(Path(args.model).resolve()),
                "images": len(train), **({"greedy_cell": args.greedy_cell, "greedy_base": args.greedy_base}
                                         if args.greedy_steps else {})}
        if cache is not None and cache.exists():
            scores = torch.load(cache, weights_only=True)
            held = json.loads(record.read_text()) if record.exists() else {"images": len(scores)}
            wrong = {k: (v, made.get(k)) for k, v in held.items() if made.get(k) != v}
            if len(scores) != len(train):
                wrong["images"] = (len(scores), len(train))
            if wrong:
                raise SystemExit(f"--teacher-cache {cache} was made for another lever (held, asked): {wrong}")
        else:
            scores = (greedy_teacher(model, train, args.greedy_steps, cell=args.greedy_cell, base=args.greedy_base)
                      if args.greedy_steps else teacher_scores(model, train, args.teacher))
            if cache is not None:
                torch.save(scores, cache)
                record.write_text(json.dumps(made))
        train = WithTeacher(train, scores)
        report["teacher_seconds"] = time.perf_counter() - t0
    classifier = load_classifier(args.classifier)[0] if args.classifier else model.classifier
    res = train_mask_generator(cfg, classifier, train, val, init=init)
    final = res.final
    if args.classifier:
        classifier, stored = train_for_storage(cfg, classifier, res.model, plain, val)
        final = {**final, **stored}
    out = NiceModel(classifier, res.model, cfg, class_names=model.class_names or names)
    out.save(args.out, final)
    report["final"] = final
    if args.measure:
        report["baseline"] = measure(model, args.dataset, args.measure, tuple(args.baselines))
        report["lever"] = measure(out, args.dataset, args.measure, tuple(args.baselines))
    print(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
