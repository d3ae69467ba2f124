"""The rate-accuracy comparison on a test set at native size (photos of many sizes, or one
size that is not the classifier's view): every method encodes the native image, every decode
is classified through the classifier's view, bytes are against the source files.

Rate points: NICE as the product stores it (`nice compress`'s engine: native masks, mixing,
search and guard); JPEG and WebP quality sweeps of the originals; the per-image oracles
(lowest JPEG / WebP / AVIF quality keeping the prediction, by bisection over q 1..95, and the
smallest of the three per image); the whole-image search over the product's own ladders
(`search.qualities` x `search.native_formats`); uniform downsampling by 2 and 4 in the
source's own format; and the other rankings (Grad-CAM, integrated gradients, saliency, centre,
random) in place of the generator's, through the same engine: the same native masks, mixing,
codec, search and guard. Every row carries the CPU milliseconds per image it cost (and, for
the rankings, the ranking's share).
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
from nice.evaluate.attributions import LEARNED, InferenceNets, attribute, timed_attribute
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


def lowest_rung(pixels: np.ndarray, mode: str, fmt: str, effort: Any, keeps: Callable[[np.ndarray], bool],
                qualities: Sequence[int] = ORACLE_QUALITIES, start: int = 0) -> tuple[int | None, bytes | None]:
    """The smallest encode of `pixels` in `fmt` whose decode `keeps` the prediction and its
    quality, (q, data), found by bisection over `qualities` (assumes a higher quality keeps it
    when a lower one does); (None, None) when even the highest does not. `start` skips the
    rungs below it (known to fail)."""
    lo, hi, best, best_q = start, len(qualities) - 1, None, None
    while lo <= hi:
        mid = (lo + hi) // 2
        data = encode(pixels, mode, Rung(fmt, quality=int(qualities[mid])), effort)
        if keeps(decode(data, mode)):
            best, best_q, hi = data, int(qualities[mid]), mid - 1
        else:
            lo = mid + 1
    return best_q, best


RANKINGS = ("gradcam", "integrated_gradients", "saliency", "centre", "random")
ORACLE_FORMATS = ("jpeg", "webp", "avif")


def ranking_fn(method: str, model: Any) -> Callable[[torch.Tensor, np.ndarray], torch.Tensor]:
    """`method`'s block scores of a batch of views, explaining their top-1 (for the engine)."""
    nets: list[InferenceNets] = []  # tuned on the first batch, then reused

    def scores(xv: torch.Tensor, pred: np.ndarray) -> torch.Tensor:
        if not nets and method in LEARNED:
            nets.append(InferenceNets.tuned(model, xv[:128]))
        return attribute(method, model, xv, torch.from_numpy(np.asarray(pred, dtype=np.int64)),
                         background(xv, model.config.mixing), nets=nets[0] if nets else None).scores
    return scores


def run_native_benchmark(sources: Sequence[bytes], labels: Sequence[int], model: Any,
                         qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 90), explain_limit: int = 500,
                         explain_methods: Sequence[str] = LEARNED, progress: bool = False,
                         rankings: Sequence[str] = RANKINGS, oracle_formats: Sequence[str] = ORACLE_FORMATS,
                         goals: tuple[float, float] | None = None) -> Any:
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
    oracle_bytes = {f: src_bytes.copy() for f in oracle_formats}
    ladder = tuple(int(q) for q in cfg.search.qualities)
    ladder_fmts = [f for f in cfg.search.native_formats if f in oracle_formats and f != "png"]
    ladder_bytes = src_bytes.copy()
    down_bytes = {f: np.zeros(len(sources), dtype=np.int64) for f in (2, 4)}
    down_views: dict[int, list[np.ndarray]] = {2: [], 4: []}
    cpu = {name: 0.0 for name in ("decode", "sweep", "down", "ladder", *oracle_formats)}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        c0 = time.process_time()
        try:
            return fn()
        finally:
            cpu[name] += time.process_time() - c0

    for i, data in enumerate(tqdm(sources, desc="native baselines", unit="image", disable=not progress)):
        c0 = time.process_time()
        decoded = decode_image(data)
        pixels = image_pixels(decoded.image, mode)
        views.append(view.apply(pixels))
        src_preds[i] = int(clf(views[-1][None])[0][0])
        cpu["decode"] += time.process_time() - c0
        c0 = time.process_time()
        for k, (fmt, q) in enumerate(settings):
            enc = encode(pixels, mode, Rung(fmt, quality=int(q)), effort)
            sweep_bytes[k, i] = len(enc)
            sweep_views[k].append(view.apply(decode(enc, mode)))
        cpu["sweep"] += time.process_time() - c0
        keeps = (lambda back, i=i: top1(back) == src_preds[i])
        found: dict[str, int | None] = {}
        for fmt in oracle_formats:
            # Guarded like the product: no quality that keeps the prediction -> the source.
            q, best = timed(fmt, lambda fmt=fmt: lowest_rung(pixels, mode, fmt, effort, keeps))
            found[fmt] = q
            if best is not None and len(best) < src_bytes[i]:
                oracle_bytes[fmt][i] = len(best)

        def on_ladder() -> None:
            # The product's ladders on the whole image: per format the lowest rung at or above the
            # oracle's quality (the rungs below it fail, by the oracle's bisection), verified.
            for fmt in ladder_fmts:
                if found.get(fmt) is None:
                    continue
                start = next((j for j, q in enumerate(ladder) if q >= found[fmt]), len(ladder))
                _, best = lowest_rung(pixels, mode, fmt, effort, keeps, ladder, start)
                if best is not None and len(best) < ladder_bytes[i]:
                    ladder_bytes[i] = len(best)
        timed("ladder", on_ladder)
        c0 = time.process_time()
        rung = fixed_rung(cfg.codec, output_format(cfg.codec, decoded.format))
        for f in (2, 4):
            sizes, back = downsampled([pixels], mode, f, rung, fixed)
            down_bytes[f][i] = sizes[0]
            down_views[f].append(view.apply(back[0]))
        cpu["down"] += time.process_time() - c0
    src_acc = float((src_preds == y).mean())
    say(f"{len(sources)} images, source accuracy {src_acc * 100:.2f}%")

    def point(method: str, setting: str, out_bytes: np.ndarray, preds: np.ndarray, **kw: Any) -> RatePoint:
        acc = float((preds == y).mean())
        return RatePoint(method, setting, float(out_bytes.sum() / src_bytes.sum()), acc, (src_acc - acc) * 100,
                         int((preds != src_preds).sum()), **kw)

    n = max(len(sources), 1)
    items = [SourceItem(uri=f"test/{i}", data=d, key=f"{i}", label=int(lab))
             for i, (d, lab) in enumerate(zip(sources, labels))]
    decode_ms = cpu["decode"] * 1000 / n  # every row decodes and classifies its source once

    def engine(method: str, setting: str, ranking: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None
               ) -> RatePoint:
        """`method`'s ranking through `nice compress`'s engine: the same native masks, mixing,
        search and guard (NICE itself with ranking=None)."""
        comp = Compressor(model, cfg, run_id="evaluate", ranking=ranking)
        c0 = time.process_time()
        results = comp.compress(items)
        ms = (time.process_time() - c0) * 1000 / n
        out_bytes = np.array([len(r.output) if r.output is not None else src_bytes[i]
                              for i, r in enumerate(results)], dtype=np.int64)
        preds = np.array([r.row["pred_output"] if r.row.get("pred_output") is not None else src_preds[i]
                          for i, r in enumerate(results)], dtype=np.int64)
        kept = sum(r.row["status"] != "compressed" for r in results)
        density = float(np.mean([r.row.get("mask_density") or 1.0 for r in results]))
        p = point(method, setting, out_bytes, preds, guarded=True, kept=kept, density=density,
                  cpu_ms=ms, rank_ms=comp.rank_seconds * 1000 / n)
        # Flips as the guard counts them: against the engine's own source prediction.
        p.flips = sum(r.row.get("pred_output") != r.row.get("pred_source") for r in results
                      if r.row["status"] == "compressed")
        say(f"{method} through the compress engine: {p.bytes_ratio:.4f}x, {ms:.0f} CPU ms/image")
        return p

    # NICE as `nice compress` stores it: the same engine, the same guard.
    levels = ", ".join(f"{k:g}" for k in reversed(cfg.search.native_levels(cfg.search.keep)))
    points = [engine("nice", f"per-image search at native size (keep {levels})", None)]
    for m in rankings:
        points.append(engine(m, "through NICE's native search", ranking_fn(m, model)))
    sweep_ms = decode_ms + cpu["sweep"] * 1000 / n / max(len(settings), 1)
    for k, (fmt, q) in enumerate(settings):
        points.append(point(fmt, f"q{q}", sweep_bytes[k], clf.predict(sweep_views[k]), cpu_ms=sweep_ms))
    for fmt in oracle_formats:
        name = "oracle" if fmt == "jpeg" else f"oracle-{fmt}"
        points.append(point(name, f"lowest {fmt.upper()} q keeping the prediction", oracle_bytes[fmt],
                            src_preds, guarded=True, kept=int((oracle_bytes[fmt] == src_bytes).sum()),
                            cpu_ms=decode_ms + cpu[fmt] * 1000 / n))
    if len(oracle_formats) > 1:  # by construction every stored choice keeps the prediction
        best = np.min(np.stack([oracle_bytes[f] for f in oracle_formats]), axis=0)
        points.append(point("oracle-best", f"smallest of the {'/'.join(oracle_formats)} oracles per image", best,
                            src_preds, guarded=True, kept=int((best == src_bytes).sum()),
                            cpu_ms=decode_ms + sum(cpu[f] for f in oracle_formats) * 1000 / n))
    if ladder_fmts:
        points.append(point("whole-image search", f"{'/'.join(ladder_fmts)} x search.qualities, whole image",
                            ladder_bytes, src_preds, guarded=True, kept=int((ladder_bytes == src_bytes).sum()),
                            cpu_ms=decode_ms + (cpu["ladder"] + sum(cpu[f] for f in ladder_fmts)) * 1000 / n))
    for f in (2, 4):
        points.append(point("downsample", f"1/{f}", down_bytes[f], clf.predict(down_views[f]),
                            cpu_ms=decode_ms + cpu["down"] * 1000 / n / 2))
    say("codec baselines done")

    # Explanations on the views, with the one-size protocol.
    k = min(explain_limit, len(views))
    sub = RateAccuracy.of_views(np.stack(views[:k]), y[:k], model)
    target = torch.from_numpy(sub.src_preds)
    bg = background(sub.x, cfg.mixing)
    scores, seconds = {}, {}
    for m in explain_methods:
        att = timed_attribute(m, model, sub.x, target, bg, nets=sub.nets)
        scores[m], seconds[m] = att.scores, att.seconds_per_image
        say(f"explanations: {m} {seconds[m] * 1000:.2f} ms/image")
    explain = explanation_scores(sub, scores, seconds)
    tau0 = cfg.guard.tau
    for e in explain:
        if e.method == "nice":
            e.sparsity = float(sub.gates.binarize(scores["nice"].unsqueeze(1), tau0).mean())

    ok = [p for p in points if p.drop_points <= MAX_DROP_POINTS]
    best_nice = min((p for p in ok if p.method == "nice"), key=lambda p: p.bytes_ratio, default=None)
    best_codec = min((p for p in ok if p.method not in ("nice", *rankings)), key=lambda p: p.bytes_ratio, default=None)
    best_rank = min((p for p in ok if p.method in rankings), key=lambda p: p.bytes_ratio, default=None)
    extra = {} if goals is None else {"goal_codec": goals[0], "goal_ranking": goals[1]}
    return Benchmark(images=len(sources), source_accuracy=src_acc, source_bytes=int(src_bytes.sum()), points=points,
                     explain=explain, best_nice=best_nice, seconds=time.perf_counter() - t0,
                     channels=cfg.classifier.in_channels, best_codec_baseline=best_codec, best_ranking_baseline=best_rank,
                     examples=per_class_examples(sub, scores, tau0) if "nice" in scores else None, **extra)
