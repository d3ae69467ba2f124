"""NICE against what users would do instead, on the same images, the same frozen classifier
and real encoded bytes: the rate-accuracy comparison and the explanation metrics.

Rate-accuracy points (bytes relative to the source files, accuracy against labels):
  nice (several tau), guarded like the product (a flip or a bigger file keeps the source),
  and the same mixed-resolution path driven by other masks at NICE's own per-image density
  (centre, random, Grad-CAM, saliency, integrated gradients); JPEG and WebP quality sweeps of
  the originals; the per-image oracle (lowest JPEG quality that keeps the prediction);
  uniform downsampling by 2 and 4; posterisation to 2 and 4 grey levels for grey images.
Explanation metrics: deletion / insertion AUC (RISE protocol, on the gate grid, removed blocks
become the mixing background), preservation accuracy at 5/10/20% kept, seconds per image."""

from __future__ import annotations

import io
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from nice.codec import decode as decode_bytes, encode, output_format
from nice.evaluate.attributions import LEARNED, attribute, topk_mask
from nice.evaluate.baselines import _pixels
from nice.gates import HardConcrete
from nice.imageio import decode_image, to_float_batch, to_uint8_batch
from nice.mixing import _background, make_mixer
from nice.models.fuse import fuse_for_inference

MAX_DROP_POINTS = 0.5
GOAL_RATIO = 0.8  # "Make NICE win": NICE's bytes at most 0.8x the best baseline's, same accuracy budget


@dataclass
class RatePoint:
    method: str
    setting: str
    bytes_ratio: float
    accuracy: float
    drop_points: float
    flips: int  # predictions that differ from the source's
    kept: int = 0  # guarded paths: images stored as the source
    density: float | None = None  # fraction of pixels kept (mask methods)
    guarded: bool = False

    @property
    def name(self) -> str:  # plot legend group
        return self.method

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ExplainScore:
    method: str
    deletion_auc: float  # lower is better: removing the top blocks first should kill the class fast
    insertion_auc: float  # higher is better
    preservation: dict[str, float] = field(default_factory=dict)  # kept fraction -> accuracy
    seconds_per_image: float = 0.0
    sparsity: float | None = None  # NICE only: mean fraction of blocks open at the model's tau

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Benchmark:
    images: int
    source_accuracy: float
    source_bytes: int
    points: list[RatePoint]
    explain: list[ExplainScore]
    best_nice: RatePoint | None
    seconds: float
    channels: int
    # The best baseline within MAX_DROP_POINTS, split in two: codecs on the whole image (sweeps,
    # oracles, whole-image search, downsampling, posterisation), and the other rankings
    # (centre, random, Grad-CAM, ...) through NICE's own mixing, codec and search.
    best_codec_baseline: RatePoint | None = None
    best_ranking_baseline: RatePoint | None = None

    @property
    def best_baseline(self) -> RatePoint | None:
        found = [p for p in (self.best_codec_baseline, self.best_ranking_baseline) if p is not None]
        return min(found, key=lambda p: p.bytes_ratio, default=None)

    @property
    def saving_vs_best(self) -> float | None:
        """1 - NICE's bytes / the best baseline's, both within MAX_DROP_POINTS."""
        ratio = self.ratio_to(self.best_baseline)
        return None if ratio is None else 1 - ratio

    def ratio_to(self, base: RatePoint | None) -> float | None:
        """NICE's best bytes / `base`'s bytes (the issue's goal: <= GOAL_RATIO)."""
        if self.best_nice is None or base is None or base.bytes_ratio <= 0:
            return None
        return self.best_nice.bytes_ratio / base.bytes_ratio

    def to_dict(self) -> dict[str, Any]:
        return {"images": self.images, "source_accuracy": self.source_accuracy, "source_bytes": self.source_bytes,
                "points": [p.to_dict() for p in self.points], "explain": [e.to_dict() for e in self.explain],
                "best_baseline": self.best_baseline.to_dict() if self.best_baseline else None,
                "best_nice": self.best_nice.to_dict() if self.best_nice else None,
                "saving_vs_best": self.saving_vs_best, "seconds": self.seconds, "channels": self.channels,
                "best_codec_baseline": self.best_codec_baseline.to_dict() if self.best_codec_baseline else None,
                "best_ranking_baseline": self.best_ranking_baseline.to_dict() if self.best_ranking_baseline else None,
                "ratio_to_best": self.ratio_to(self.best_baseline),
                "ratio_to_best_codec": self.ratio_to(self.best_codec_baseline),
                "ratio_to_best_ranking": self.ratio_to(self.best_ranking_baseline)}


class _Classifier:
    def __init__(self, model) -> None:
        self.net = fuse_for_inference(model.classifier)

    @torch.inference_mode()
    def probs(self, x: torch.Tensor, batch: int = 512) -> torch.Tensor:
        return torch.cat([torch.softmax(self.net(x[s:s + batch]).float(), 1) for s in range(0, len(x), batch)])

    def preds(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        return self.probs(to_float_batch(np.stack(pixels))).argmax(1).numpy()


class RateAccuracy:
    """Everything the comparison needs about one test set, decoded once."""

    def __init__(self, sources: Sequence[bytes], labels: Sequence[int], model) -> None:
        self.model = model
        self.cfg = model.config
        self.channels = self.cfg.classifier.in_channels
        self.labels = np.asarray(labels)
        decoded = [decode_image(d) for d in sources]
        self.formats = [d.format for d in decoded]
        self.pixels = np.stack([_pixels(d.image, self.channels) for d in decoded])  # same shape required
        self.x = to_float_batch(self.pixels)
        self.src_bytes = np.array([len(d) for d in sources])
        self.clf = _Classifier(model)
        self.src_probs = self.clf.probs(self.x)
        self.src_preds = self.src_probs.argmax(1).numpy()
        self.src_acc = float((self.src_preds == self.labels).mean())
        self.mixer = make_mixer(self.cfg.mixing, self.cfg.gates.block)
        self.gates = HardConcrete(self.cfg.gates)
        self.codec = self.cfg.codec

    # -- helpers ------------------------------------------------------------------------
    def _point(self, method: str, setting: str, out_bytes: np.ndarray, preds: np.ndarray, **kw: Any) -> RatePoint:
        acc = float((preds == self.labels).mean())
        return RatePoint(method, setting, float(out_bytes.sum() / self.src_bytes.sum()), acc,
                         (self.src_acc - acc) * 100, int((preds != self.src_preds).sum()), **kw)

    def _encode_pixels(self, pixels: np.ndarray, fmt_of: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        sizes, back = [], []
        mode = "RGB" if self.channels == 3 else "L"
        for arr, src_fmt in zip(pixels, fmt_of):
            fmt = output_format(self.codec, src_fmt)
            data = encode(Image.fromarray(arr, mode), fmt, self.codec)
            sizes.append(len(data))
            back.append(_pixels(decode_bytes(data), self.channels))
        return np.array(sizes), back

    # -- mixed-resolution path ------------------------------------------------------------
    def mixed(self, method: str, setting: str, z: torch.Tensor) -> tuple[RatePoint, RatePoint]:
        """The product's path for masks `z`: unguarded, and guarded (flip or no saving -> source)."""
        pixels = to_uint8_batch(self.mixer(self.x, z))
        sizes, back = self._encode_pixels(pixels, self.formats)
        preds = self.clf.preds(back)
        density = float(torch.nn.functional.interpolate(z, size=self.x.shape[-2:], mode="nearest").mean())
        raw = self._point(method, setting, sizes, preds, density=density)
        keep = (preds != self.src_preds) | (sizes >= self.src_bytes)
        g_sizes = np.where(keep, self.src_bytes, sizes)
        g_preds = np.where(keep, self.src_preds, preds)
        guarded = self._point(method, setting, g_sizes, g_preds, kept=int(keep.sum()), density=density, guarded=True)
        return raw, guarded

    def searched(self, method: str, setting: str, scores: torch.Tensor | None,
                 keep: Sequence[float] | None = None) -> RatePoint:
        """The product's per-image operating-point search (nice/compress/search.py) with any
        block ranking; `scores=None` searches the codec ladders on the whole image only."""
        from nice.compress.search import OperatingPointSearch

        def classify(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            conf, pred = self.clf.probs(to_float_batch(pixels)).max(1)
            return pred.numpy(), conf.numpy()

        search = OperatingPointSearch(self.cfg.search, self.codec, classify, self.mixer, self.cfg.gates.block)
        mode = "RGB" if self.channels == 3 else "L"
        if scores is None:
            scores, keep = torch.zeros(len(self.x), 1, 1), (1.0,)
        sizes = self.src_bytes.astype(np.int64).copy()
        preds = self.src_preds.copy()
        density = []
        for s in range(0, len(self.x), 256):
            sl = slice(s, s + 256)
            choices = search.run(self.x[sl], scores[sl], self.src_preds[sl], self.src_bytes[sl],
                                 self.formats[sl], mode, keep=keep)
            for j, c in enumerate(choices):
                if c is not None:
                    sizes[s + j], preds[s + j] = len(c.data), c.pred
                density.append(c.keep if c is not None else 1.0)
        return self._point(method, setting, sizes, preds, guarded=True, kept=int((sizes == self.src_bytes).sum()),
                           density=float(np.mean(density)))

    def nice_scores(self) -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([self.model.generator.eval()(self.x[s:s + 512])[:, 0]
                              for s in range(0, len(self.x), 512)])

    # -- codec baselines --------------------------------------------------------------------
    def quality_sweep(self, fmt: str, qualities: Sequence[int]) -> list[RatePoint]:
        out = []
        mode = "RGB" if self.channels == 3 else "L"
        for q in qualities:
            sizes, back = [], []
            for arr in self.pixels:
                buf = io.BytesIO()
                Image.fromarray(arr, mode).save(buf, fmt, quality=q, **({"optimize": True} if fmt == "JPEG" else {}))
                sizes.append(buf.tell())
                back.append(_pixels(Image.open(io.BytesIO(buf.getvalue())), self.channels))
            out.append(self._point(fmt.lower(), f"q{q}", np.array(sizes), self.clf.preds(back)))
        return out

    def oracle(self, fmt: str = "JPEG") -> RatePoint:
        """Per image, the lowest quality whose decode keeps the source prediction."""
        return self.search(self.pixels, fmt, "oracle" if fmt == "JPEG" else f"oracle-{fmt.lower()}",
                           f"lowest {fmt} q keeping the prediction")

    def search(self, pixels: np.ndarray, fmt: str, method: str, setting: str, lo: int = 1, hi: int = 95,
               density: float | None = None) -> RatePoint:
        """Binary search, all images in lockstep, for the lowest `fmt` quality of `pixels` whose
        decode keeps the source prediction; never more bytes than the source (then it is kept)."""
        n = len(pixels)
        lo_a, hi_a = np.full(n, lo), np.full(n, hi)
        best_size = self.src_bytes.astype(np.int64).copy()
        mode = "RGB" if self.channels == 3 else "L"
        extra = {"optimize": True} if fmt == "JPEG" else {"method": 4}
        cache: dict[tuple[int, int], tuple[int, np.ndarray]] = {}

        def probe(i: int, q: int) -> tuple[int, np.ndarray]:
            if (i, q) not in cache:
                buf = io.BytesIO()
                Image.fromarray(pixels[i], mode).save(buf, fmt, quality=int(q), **extra)
                cache[(i, q)] = (buf.tell(), _pixels(Image.open(io.BytesIO(buf.getvalue())), self.channels))
            return cache[(i, q)]

        while (lo_a <= hi_a).any():
            idx = np.flatnonzero(lo_a <= hi_a)
            mid = (lo_a[idx] + hi_a[idx]) // 2
            probes = [probe(i, q) for i, q in zip(idx, mid)]
            preds = self.clf.preds([p[1] for p in probes])
            ok = preds == self.src_preds[idx]
            sizes = np.array([p[0] for p in probes])
            better = ok & (sizes < best_size[idx])
            best_size[idx[better]] = sizes[better]
            hi_a[idx[ok]] = mid[ok] - 1
            lo_a[idx[~ok]] = mid[~ok] + 1
        # Every stored image keeps its prediction (the source where no quality did).
        return self._point(method, setting, best_size, self.src_preds.copy(), guarded=True,
                           kept=int((best_size == self.src_bytes).sum()), density=density)

    def downsample(self, factor: int) -> RatePoint:
        h, w = self.pixels.shape[1:3]
        mode = "RGB" if self.channels == 3 else "L"
        sizes, back = [], []
        for arr, src_fmt in zip(self.pixels, self.formats):
            small = Image.fromarray(arr, mode).resize((max(1, w // factor), max(1, h // factor)), Image.Resampling.BOX)
            fmt = output_format(self.codec, src_fmt)
            data = encode(small, fmt, self.codec)
            sizes.append(len(data))
            back.append(_pixels(decode_bytes(data).resize((w, h), Image.Resampling.BILINEAR), self.channels))
        return self._point("downsample", f"1/{factor}", np.array(sizes), self.clf.preds(back))

    def posterize(self, levels: int) -> RatePoint:
        """Grey images only: 1-bit (2 levels) or 2-bit (4 levels) PNG."""
        sizes, back = [], []
        for arr in self.pixels:
            q = np.round(arr.astype(np.float32) / 255 * (levels - 1)).astype(np.uint8)
            buf = io.BytesIO()
            if levels == 2:
                Image.fromarray(q * 255, "L").convert("1").save(buf, "PNG", optimize=True)
            else:
                img = Image.fromarray(q, "P")
                img.putpalette([v for i in range(levels) for v in (round(i * 255 / (levels - 1)),) * 3])
                img.save(buf, "PNG", optimize=True, bits=int(np.ceil(np.log2(levels))))
            sizes.append(buf.tell())
            back.append(_pixels(Image.open(io.BytesIO(buf.getvalue())), self.channels))
        return self._point("posterize", f"{levels} levels PNG", np.array(sizes), self.clf.preds(back))


def explanation_scores(ra: RateAccuracy, scores: dict[str, torch.Tensor], seconds: dict[str, float],
                       steps: int = 10, fractions: Sequence[float] = (0.05, 0.1, 0.2)) -> list[ExplainScore]:
    """Deletion / insertion AUC of the class probability (RISE) and preservation accuracy."""
    bg = _background(ra.x, ra.cfg.mixing)
    target = torch.from_numpy(ra.src_preds)
    out = []
    for method, s in scores.items():
        dele, ins = [], []
        for f in np.linspace(0, 1, steps + 1):
            z = topk_mask(s, float(f))
            kept = ra.mixer(ra.x, z)  # only the top blocks, the rest background
            removed = torch.lerp(ra.x, bg, _up(z, ra))  # top blocks replaced by the background
            ins.append(ra.clf.probs(kept).gather(1, target[:, None]).mean().item())
            dele.append(ra.clf.probs(removed).gather(1, target[:, None]).mean().item())
        x_axis = np.linspace(0, 1, steps + 1)
        pres = {}
        for f in fractions:
            preds = ra.clf.probs(ra.mixer(ra.x, topk_mask(s, f))).argmax(1).numpy()
            pres[f"{int(f * 100)}%"] = float((preds == ra.labels).mean())
        out.append(ExplainScore(method, float(np.trapezoid(dele, x_axis)), float(np.trapezoid(ins, x_axis)),
                                pres, seconds.get(method, 0.0)))
    return out


def _up(z: torch.Tensor, ra: RateAccuracy) -> torch.Tensor:
    from nice.gates import upsample_gates

    return upsample_gates(z, ra.cfg.gates.block, (ra.x.shape[-2], ra.x.shape[-1]))


def run_benchmark(sources: Sequence[bytes], labels: Sequence[int], model, taus: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
                  qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 90), explain_limit: int = 500,
                  methods: Sequence[str] = ("centre", "random", "gradcam", "saliency", "integrated_gradients"),
                  explain_methods: Sequence[str] = LEARNED, progress: bool = False) -> Benchmark:
    """The full comparison on one test set. Explanation metrics use the first `explain_limit`
    images (occlusion costs one forward pass per window)."""
    import sys

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[evaluate {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    ra = RateAccuracy(sources, labels, model)
    say(f"{len(ra.x)} images, source accuracy {ra.src_acc * 100:.2f}%")
    points: list[RatePoint] = []
    nice = ra.nice_scores()
    tau0 = model.config.guard.tau
    for tau in taus:
        raw, guarded = ra.mixed("nice", f"tau {tau}", ra.gates.binarize(nice.unsqueeze(1), tau))
        points += [raw, guarded]
    say("nice operating points done")
    # Other masks at NICE's own per-image density (at the model's tau).
    density = ra.gates.binarize(nice.unsqueeze(1), tau0).mean(dim=(1, 2, 3))
    target = torch.from_numpy(ra.src_preds)
    bg = _background(ra.x, model.config.mixing)
    scores: dict[str, torch.Tensor] = {"nice": nice}
    seconds: dict[str, float] = {}
    # The product's default: the per-image operating-point search, with NICE's ranking, with
    # every other ranking, and on the whole image (a codec oracle over the same ladders).
    levels = ", ".join(f"{k:g}" for k in model.config.search.keep)
    points.append(ra.searched("nice", f"per-image search (keep {levels})", nice))
    points.append(ra.searched("oracle-search", "same formats and ladders, whole image", None))
    say("per-image search: nice and whole-image oracle done")
    for m in methods:
        att = attribute(m, model, ra.x, target, bg)
        scores[m], seconds[m] = att.scores, att.seconds_per_image
        raw, guarded = ra.mixed(m, f"NICE density (tau {tau0})", topk_mask(att.scores, density))
        points += [raw, guarded]
        points.append(ra.searched(m, "per-image search, same keep levels", att.scores))
        say(f"{m} masks done")
    for fmt in ("JPEG", "WEBP"):
        points += ra.quality_sweep(fmt, qualities)
    say("quality sweeps done")
    points += [ra.oracle("JPEG"), ra.oracle("WEBP")]
    # NICE with the same per-image search: the mixed image at the lowest quality that keeps
    # the prediction (the fair match for the oracles).
    z0 = ra.gates.binarize(nice.unsqueeze(1), tau0)
    mixed_pixels = to_uint8_batch(ra.mixer(ra.x, z0))
    for fmt in ("JPEG", "WEBP"):
        points.append(ra.search(mixed_pixels, fmt, "nice", f"tau {tau0} + lowest {fmt} q", density=float(density.mean())))
    points += [ra.downsample(2), ra.downsample(4)]
    if ra.channels == 1:
        points += [ra.posterize(2), ra.posterize(4)]
    say("oracle, downsampling, posterisation done")

    # Explanations on a subset: every learned method, timed on the same images.
    k = min(explain_limit, len(ra.x))
    sub = ra if k == len(ra.x) else RateAccuracy(sources[:k], labels[:k], model)
    sub_target = torch.from_numpy(sub.src_preds)
    sub_bg = _background(sub.x, model.config.mixing)
    sub_scores, sub_seconds = {}, {}
    for m in explain_methods:
        att = attribute(m, model, sub.x, sub_target, sub_bg)
        sub_scores[m], sub_seconds[m] = att.scores, att.seconds_per_image
        say(f"explanations: {m} {att.seconds_per_image * 1000:.2f} ms/image")
    explain = explanation_scores(sub, sub_scores, sub_seconds)
    for e in explain:
        if e.method == "nice":
            e.sparsity = float(sub.gates.binarize(sub_scores["nice"].unsqueeze(1), tau0).mean())

    ok = [p for p in points if p.drop_points <= MAX_DROP_POINTS]
    nice_ok = [p for p in ok if p.method == "nice" and p.guarded]
    base_ok = [p for p in ok if p.method != "nice"]
    best_nice = min(nice_ok, key=lambda p: p.bytes_ratio, default=None)
    best_ranking = min((p for p in base_ok if p.method in methods), key=lambda p: p.bytes_ratio, default=None)
    best_codec = min((p for p in base_ok if p.method not in methods), key=lambda p: p.bytes_ratio, default=None)
    return Benchmark(images=len(ra.x), source_accuracy=ra.src_acc, source_bytes=int(ra.src_bytes.sum()),
                     points=points, explain=explain, best_nice=best_nice, seconds=time.perf_counter() - t0,
                     channels=ra.channels, best_codec_baseline=best_codec, best_ranking_baseline=best_ranking)
