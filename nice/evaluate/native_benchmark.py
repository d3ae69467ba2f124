"""The rate-accuracy comparison on a test set at native size (photos of many sizes, or one
size that is not the classifier's view): every method encodes the native image, every decode
is classified through the classifier's view, bytes are against the source files.

Rate points: NICE as the product stores it (`nice compress`'s engine: native masks, mixing,
search and guard); JPEG and WebP quality sweeps of the originals; the per-image oracles
(lowest JPEG / WebP quality keeping the prediction, by bisection); uniform downsampling by 2
and 4 in the source's own format. The other rankings (Grad-CAM, ...) through NICE's mixing are
left out here: at native size they would need their own native search per image.
Explanation metrics are computed on the views (what the classifier sees), with the same
protocol as the one-size benchmark. Sources are decoded one at a time (memory: one native image
plus the views), except inside the engine, which bounds memory by its pixel budget."""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nice.classify import Classify
from nice.codec import Rung, decode, encode, final_effort, fixed_effort, fixed_rung, output_format
from nice.evaluate.attributions import LEARNED, attribute
from nice.evaluate.baselines import downsampled
from nice.imageio import decode_image, image_pixels
from nice.mixing import background
from nice.view import View

ORACLE_QUALITIES = tuple(range(1, 96))


def needs_native(sources: Sequence[bytes], model: Any) -> bool:
    """True when the test set is not all at the view's own size (the one-size benchmark feeds
    pixels to the classifier as they are)."""
    import io

    from PIL import Image

    view = View.of(model.config.classifier)
    if view is None:
        return False
    sizes = set()
    for d in sources:
        try:
            with Image.open(io.BytesIO(d)) as img:  # the header only: no full decode
                sizes.add(img.size)
        except Exception:  # noqa: BLE001 - whatever Pillow cannot open, the native path reports
            return True
    return any(not view.geometry(h, w).identity for w, h in sizes)


def lowest_quality(pixels: np.ndarray, mode: str, fmt: str, effort: Any, keeps: Callable[[np.ndarray], bool],
                   qualities: Sequence[int] = ORACLE_QUALITIES) -> bytes | None:
    """The smallest encode of `pixels` in `fmt` whose decode `keeps` the prediction, found by
    bisection over `qualities` (assumes a higher quality keeps it when a lower one does);
    None when even the highest does not."""
    lo, hi, best = 0, len(qualities) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode(pixels, mode, Rung(fmt, quality=int(qualities[mid])), effort)
        if keeps(decode(data, mode)):
            best, hi = data, mid - 1
        else:
            lo = mid + 1
    return best


def run_native_benchmark(sources: Sequence[bytes], labels: Sequence[int], model: Any,
                         qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 90), explain_limit: int = 500,
                         explain_methods: Sequence[str] = LEARNED, progress: bool = False) -> Any:
    """The comparison at native size; returns a `nice.evaluate.benchmark.Benchmark`."""
    import sys

    from tqdm import tqdm

    from nice.compress.engine import Compressor, SourceItem
    from nice.evaluate.benchmark import MAX_DROP_POINTS, Benchmark, RateAccuracy, RatePoint, explanation_scores, \
        per_class_examples

    t0 = time.perf_counter()
    cfg = model.config
    view = View(cfg.classifier)
    mode = "RGB" if cfg.classifier.in_channels == 3 else "L"
    clf = Classify(model.classifier)
    y = np.asarray(labels)
    src_bytes = np.array([len(s) for s in sources], dtype=np.int64)
    effort, fixed = final_effort(cfg.codec, cfg.search), fixed_effort(cfg.codec)

    def say(msg: str) -> None:
        if progress:
            print(f"[evaluate {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    def top1(img: np.ndarray) -> int:
        return int(clf(view.apply(img)[None])[0][0])

    # Baselines, one native image at a time: only views and byte counts are kept.
    views, src_preds = [], np.empty(len(sources), dtype=np.int64)
    settings = [(fmt, q) for fmt in ("jpeg", "webp") for q in qualities]
    sweep_bytes = np.zeros((len(settings), len(sources)), dtype=np.int64)
    sweep_views: list[list[np.ndarray]] = [[] for _ in settings]
    oracle_bytes = {f: src_bytes.copy() for f in ("jpeg", "webp")}
    oracle_preds: dict[str, np.ndarray] = {}
    down_bytes = {f: np.zeros(len(sources), dtype=np.int64) for f in (2, 4)}
    down_views: dict[int, list[np.ndarray]] = {2: [], 4: []}
    for i, data in enumerate(tqdm(sources, desc="native baselines", unit="image", disable=not progress)):
        decoded = decode_image(data)
        pixels = image_pixels(decoded.image, mode)
        views.append(view.apply(pixels))
        src_preds[i] = int(clf(views[-1][None])[0][0])
        for k, (fmt, q) in enumerate(settings):
            enc = encode(pixels, mode, Rung(fmt, quality=int(q)), effort)
            sweep_bytes[k, i] = len(enc)
            sweep_views[k].append(view.apply(decode(enc, mode)))
        for fmt in ("jpeg", "webp"):
            # Guarded like the product: no quality that keeps the prediction -> the source.
            best = lowest_quality(pixels, mode, fmt, effort, lambda back: top1(back) == src_preds[i])
            if best is not None and len(best) < src_bytes[i]:
                oracle_bytes[fmt][i] = len(best)
        rung = fixed_rung(cfg.codec, output_format(cfg.codec, decoded.format))
        for f in (2, 4):
            sizes, back = downsampled([pixels], mode, f, rung, fixed)
            down_bytes[f][i] = sizes[0]
            down_views[f].append(view.apply(back[0]))
    for fmt in ("jpeg", "webp"):
        oracle_preds[fmt] = src_preds  # by construction: every stored choice keeps it
    src_acc = float((src_preds == y).mean())
    say(f"{len(sources)} images, source accuracy {src_acc * 100:.2f}%")

    def point(method: str, setting: str, out_bytes: np.ndarray, preds: np.ndarray, **kw: Any) -> RatePoint:
        acc = float((preds == y).mean())
        return RatePoint(method, setting, float(out_bytes.sum() / src_bytes.sum()), acc, (src_acc - acc) * 100,
                         int((preds != src_preds).sum()), **kw)

    # NICE as `nice compress` stores it: the same engine, the same guard.
    comp = Compressor(model, cfg, run_id="evaluate")
    results = comp.compress([SourceItem(uri=f"test/{i}", data=d, key=f"{i}", label=int(lab))
                             for i, (d, lab) in enumerate(zip(sources, labels))])
    nice_bytes = np.array([len(r.output) if r.output is not None else src_bytes[i]
                           for i, r in enumerate(results)], dtype=np.int64)
    nice_preds = np.array([r.row["pred_output"] if r.row.get("pred_output") is not None else src_preds[i]
                           for i, r in enumerate(results)], dtype=np.int64)
    kept = sum(r.row["status"] != "compressed" for r in results)
    density = float(np.mean([r.row.get("mask_density") or 1.0 for r in results]))
    levels = ", ".join(f"{k:g}" for k in cfg.search.keep)
    nice_point = point("nice", f"per-image search at native size (keep {levels})", nice_bytes, nice_preds,
                       guarded=True, kept=kept, density=density)
    # Flips as the guard counts them: against the engine's own source prediction.
    nice_point.flips = sum(r.row.get("pred_output") != r.row.get("pred_source") for r in results
                           if r.row["status"] == "compressed")
    points = [nice_point]
    say("nice (the compress engine) done")
    for k, (fmt, q) in enumerate(settings):
        points.append(point(fmt, f"q{q}", sweep_bytes[k], clf.predict(sweep_views[k])))
    for fmt in ("jpeg", "webp"):
        name = "oracle" if fmt == "jpeg" else "oracle-webp"
        points.append(point(name, f"lowest {fmt.upper()} q keeping the prediction", oracle_bytes[fmt],
                            oracle_preds[fmt], guarded=True, kept=int((oracle_bytes[fmt] == src_bytes).sum())))
    for f in (2, 4):
        points.append(point("downsample", f"1/{f}", down_bytes[f], clf.predict(down_views[f])))
    say("codec baselines done")

    # Explanations on the views, with the one-size protocol.
    k = min(explain_limit, len(views))
    sub = RateAccuracy.of_views(np.stack(views[:k]), y[:k], model)
    target = torch.from_numpy(sub.src_preds)
    bg = background(sub.x, cfg.mixing)
    scores, seconds = {}, {}
    for m in explain_methods:
        att = attribute(m, model, sub.x, target, bg)
        scores[m], seconds[m] = att.scores, att.seconds_per_image
        say(f"explanations: {m} {seconds[m] * 1000:.2f} ms/image")
    explain = explanation_scores(sub, scores, seconds)
    tau0 = cfg.guard.tau
    for e in explain:
        if e.method == "nice":
            e.sparsity = float(sub.gates.binarize(scores["nice"].unsqueeze(1), tau0).mean())

    ok = [p for p in points if p.drop_points <= MAX_DROP_POINTS]
    best_nice = min((p for p in ok if p.method == "nice"), key=lambda p: p.bytes_ratio, default=None)
    best_codec = min((p for p in ok if p.method != "nice"), key=lambda p: p.bytes_ratio, default=None)
    return Benchmark(images=len(sources), source_accuracy=src_acc, source_bytes=int(src_bytes.sum()), points=points,
                     explain=explain, best_nice=best_nice, seconds=time.perf_counter() - t0,
                     channels=cfg.classifier.in_channels, best_codec_baseline=best_codec, best_ranking_baseline=None,
                     examples=per_class_examples(sub, scores, tau0) if "nice" in scores else None)
