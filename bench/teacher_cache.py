"""Teacher rankings for `bench/generator_levers.py --teacher-cache`, computed on a range of
training images so that several processes (one core each) share a large split, and the greedy
insertion ranking: a teacher for preservation that no evaluation method is (issue 20's levers).

`occlusion`: occlusion of the gate blocks explaining the *plain* classifier (the one
`nice train-mask-generator` trains against and distils, `--classifier`), against the model's
stored background, on training images [--start, --stop) in the order the bench reads them.

`greedy`: (the product computes it with `train_generator.greedy_steps`, on the classifier that
ships) from the stored background, add the block that most raises the predicted class's
probability, `--steps` times (the preservation oracle at `--steps` blocks); the first blocks in that
order, the others in occlusion's, each image's own occlusion values re-assigned in the new order
(so a listwise student sees occlusion's spread of values; `--occlusion` is the occlusion cache of
the same images). It costs ~(64 + 63 + ...) forwards an image at 8x8 blocks: 0.5 s an image at 3
steps, 2 s at 13 on one core at 64 px.

`--oracle N` measures instead, on the first N test images and the model's own classifier:
preservation at 5 / 10 / 20% kept and the deletion / insertion AUC of occlusion and of the greedy
ranking built on it.

  python bench/teacher_cache.py --model M --dataset ART --classifier C --start 0 --stop 12000 --out occ.pt
  python bench/teacher_cache.py --model M --dataset ART --classifier C --teacher greedy --steps 3 \
      --occlusion occ.pt --start 0 --stop 3000 --out greedy3.pt
  python bench/teacher_cache.py --model M --dataset ART --oracle 200 --steps 13
  python bench/teacher_cache.py --model M --dataset mnist --oracle 300 --steps 3 --cell 4
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from nice.bundle import NiceModel
from nice.device import configure_threads
from nice.mixing import background
from nice.training.teacher import greedy_insertion, put_first


def oracle(model: NiceModel, dataset: str, limit: int, steps: int, cell: int = 1) -> dict[str, object]:
    from nice.evaluate.attributions import attribute
    from nice.evaluate.benchmark import RateAccuracy, explanation_scores
    from nice.evaluate.suite import load_test_set

    sources, labels, _ = load_test_set(dataset, limit)
    ra = RateAccuracy(sources, labels, model)
    target = torch.from_numpy(ra.src_preds)
    occ = attribute("occlusion", model, ra.x, target, background(ra.x, model.config.mixing)).scores
    t0 = time.perf_counter()
    order = greedy_insertion(ra.clf.probs, ra.x, model.config, target, steps, cell=cell)
    out: dict[str, object] = {"greedy_seconds_an_image": (time.perf_counter() - t0) / len(ra.x)}
    for name, s in (("occlusion", occ), (f"greedy {steps} + occlusion", put_first(occ, order, cell))):
        e = explanation_scores(ra, {"occlusion": s}, {}, standard=False)[0]  # measured as published, unsmoothed
        out[name] = {**e.preservation, "deletion_auc": e.deletion_auc, "insertion_auc": e.insertion_auc}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="a NICE model: its config (background, gates, view)")
    ap.add_argument("--dataset", required=True, help="a `nice ingest` artifact")
    ap.add_argument("--classifier", help="the plain classifier to explain (train-classifier's output)")
    ap.add_argument("--teacher", choices=["occlusion", "greedy"], default="occlusion")
    ap.add_argument("--steps", type=int, default=3, help="greedy: blocks inserted (3 = 5%% of 8x8 blocks)")
    ap.add_argument("--cell", type=int, default=1,
                    help="greedy: candidates of cell x cell gate blocks (4 on MNIST's 1-px gates)")
    ap.add_argument("--occlusion", help="greedy: the occlusion cache of training images [0, >= stop)")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--stop", type=int, default=12000)
    ap.add_argument("--out")
    ap.add_argument("--oracle", type=int, default=0, help="measure on the first N test images instead")
    args = ap.parse_args()
    configure_threads()
    model = NiceModel.load(args.model)
    if args.oracle:
        print(json.dumps(oracle(model, args.dataset, args.oracle, args.steps, args.cell), indent=1))
        return
    if not (args.classifier and args.out) or (args.teacher == "greedy" and not args.occlusion):
        ap.error("--classifier and --out are needed (and --occlusion for greedy)")
    from torch.utils.data import Subset

    from nice.checkpoint import load_classifier
    from nice.classify import Classify
    from nice.data.sources import training_data
    from nice.training.teacher import first_images, teacher_scores
    from nice.view import View

    plain = load_classifier(args.classifier)[0]
    data = first_images(training_data(args.dataset, view=View.of(model.config.classifier))[0], args.stop)
    t0 = time.perf_counter()
    if args.teacher == "occlusion":
        scores = teacher_scores(NiceModel(plain, model.generator, model.config),
                                Subset(data, range(args.start, len(data))), "occlusion")
    else:
        x = data.tensors[0][args.start:]
        probs = Classify(plain).probs
        order = greedy_insertion(probs, x, model.config, probs(x).argmax(1), args.steps, cell=args.cell)
        scores = put_first(torch.load(args.occlusion, weights_only=True)[args.start:len(data)], order, args.cell)
    torch.save(scores, args.out)
    print(json.dumps({"images": [args.start, len(data)], "seconds": time.perf_counter() - t0}))


if __name__ == "__main__":
    main()
