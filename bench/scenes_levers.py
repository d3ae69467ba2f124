"""Levers of issue 18 on a trained scenes model: NICE's stored bytes through `nice compress`'s
engine under config variants, against the best whole-image codec oracle (per image the
smallest of the lowest JPEG / WebP / AVIF quality keeping the prediction), on the same test
images. The oracle bytes are cached next to `--out` (they do not depend on the variant).

  PYTHONPATH=. python bench/scenes_levers.py --model M --dataset DS --limit 100 --out levers.json \
      --variant default '{}' --variant fine-levels '{"search": {"keep": [0.01, 0.02, 0.05, 0.1, 0.2, 1.0]}}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from nice.bundle import NiceModel
from nice.classify import Classify
from nice.codec import final_effort
from nice.compress.engine import Compressor, SourceItem
from nice.device import configure_threads
from nice.evaluate.native_benchmark import ORACLE_FORMATS, lowest_rung, ranking_fn
from nice.evaluate.suite import load_test_set
from nice.imageio import decode_image, image_pixels
from nice.view import View


def oracle_bytes(sources: list[bytes], model: NiceModel, cache: Path) -> dict[str, list[int]]:
    if cache.is_file():
        data = json.loads(cache.read_text())
        if len(data["jpeg"]) >= len(sources):
            return {k: v[:len(sources)] for k, v in data.items()}
    cfg = model.config
    view, clf = View(cfg.classifier), Classify(model.classifier)
    effort = final_effort(cfg.codec, cfg.search)
    out: dict[str, list[int]] = {f: [] for f in ORACLE_FORMATS}
    for data in tqdm(sources, desc="oracles", unit="image"):
        px = image_pixels(decode_image(data).image, "RGB")
        pred = int(clf(view.apply(px)[None])[0][0])
        for fmt in ORACLE_FORMATS:
            _, best = lowest_rung(px, "RGB", fmt, effort, lambda back: int(clf(view.apply(back)[None])[0][0]) == pred)
            out[fmt].append(min(len(best), len(data)) if best is not None else len(data))
    cache.write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OVERRIDES_JSON"), default=[])
    ap.add_argument("--ranking", default="", help="another ranking in place of the generator's (gradcam, ...)")
    args = ap.parse_args()
    configure_threads()
    model = NiceModel.load(args.model)
    sources, labels, _ = load_test_set(args.dataset, args.limit)
    src = np.array([len(s) for s in sources])
    cache = Path(args.out).with_suffix(".oracles.json")
    oracles = oracle_bytes(sources, model, cache)
    best = np.min(np.stack([np.array(v) for v in oracles.values()]), axis=0)
    results = {"ranking": args.ranking or "nice", "images": len(sources), "source_bytes": int(src.sum()),
               "oracles": {f: float(np.sum(v) / src.sum()) for f, v in oracles.items()},
               "oracle_best": float(best.sum() / src.sum()), "variants": {}}
    print(json.dumps({k: v for k, v in results.items() if k != "variants"}), flush=True)
    items = [SourceItem(uri=f"test/{i}", data=d, key=str(i), label=int(y)) for i, (d, y) in enumerate(zip(sources, labels))]
    for name, overrides in args.variant or [("default", "{}")]:
        cfg = model.config.with_overrides(json.loads(overrides))
        ranking = ranking_fn(args.ranking, model) if args.ranking else None
        comp = Compressor(model, cfg, run_id="levers", ranking=ranking)
        c0, t0 = time.process_time(), time.perf_counter()
        rows = comp.compress(items)
        cpu_ms, wall_ms = (time.process_time() - c0) * 1000 / len(items), (time.perf_counter() - t0) * 1000 / len(items)
        out = np.array([len(r.output) if r.output is not None else len(sources[i]) for i, r in enumerate(rows)])
        flips = sum(r.row.get("pred_output") != r.row.get("pred_source") for r in rows if r.row["status"] == "compressed")
        fmts: dict[str, int] = {}
        keeps, quals = [], []
        for r in rows:
            fmts[r.row.get("format_out") or "source"] = fmts.get(r.row.get("format_out") or "source", 0) + 1
            params = json.loads(r.row.get("codec_params") or "{}")
            keeps.append(params.get("keep", 1.0))
            if "quality" in params:
                quals.append(params["quality"])
        res = {"bytes_ratio": float(out.sum() / src.sum()), "vs_oracle_best": float(out.sum() / best.sum()),
               "flips": int(flips), "kept_source": int(sum(r.row["status"] != "compressed" for r in rows)),
               "density": float(np.mean([r.row.get("mask_density") or 1.0 for r in rows])),
               "keep": float(np.mean(keeps)), "quality": float(np.mean(quals)) if quals else None,
               "formats": fmts, "cpu_ms": cpu_ms, "wall_ms": wall_ms, "rank_ms": comp.rank_seconds * 1000 / len(items)}
        results["variants"][name] = {"overrides": json.loads(overrides), **res,
                                     "frame_bytes": out.tolist(), "frame_keep": keeps}  # per frame, for comparisons
        print(name, json.dumps(res), flush=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
