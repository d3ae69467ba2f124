"""NICE against what users would do instead, on the same images, the same frozen classifier
and real encoded bytes: the rate-accuracy comparison and the explanation metrics.

Rate-accuracy points (bytes relative to the source files, accuracy against labels):
  nice (several tau), guarded like the product (a flip or a bigger file keeps the source),
  and the same mixed-resolution path driven by other masks at NICE's own per-image density
  (centre, random, Grad-CAM, saliency, integrated gradients); JPEG and WebP quality sweeps of
  the originals; the per-image oracle (lowest JPEG quality that keeps the prediction);
  uniform downsampling by 2 and 4; posterisation to 2 and 4 grey levels for grey images.
Explanation metrics (on the gate grid, NICE ranked as the compressor ranks): deletion / insertion
AUC with removed blocks becoming the product's background (what is stored), preservation accuracy
at 5/10/20% kept, seconds per image; and the published protocols: RISE deletion / insertion
(black / blurred substrate), ROAD (noisy linear imputation, MoRF / LeRF), captum infidelity and
sensitivity_max (nice.evaluate.faithfulness)."""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from nice.classify import Classify
from nice.codec import Rung, final_effort, fixed_effort, fixed_rung, output_format
from nice.compress.search import Masks, Search
from nice.evaluate.attributions import LEARNED, InferenceNets, attribute, timed_attribute, topk_mask
from nice.evaluate.baselines import downsampled, reencode
from nice.gates import HardConcrete, upsample_gates
from nice.imageio import decode_image, image_pixels, to_float_batch, to_uint8_batch
from nice.mixing import background, make_mixer
from nice.ranking import search_ranking, smoothed_scores

MAX_DROP_POINTS = 0.5
GOAL_RATIO = 0.8  # "Make NICE win": NICE's bytes at most 0.8x the best baseline's, same accuracy budget
# Scenes (a small object in a native-size photo, issue 18): NICE / best whole-image codec <= 0.30,
# NICE / best other ranking through the same search <= 0.90.
SCENES_GOALS = (0.30, 0.90)


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
    cpu_ms: float | None = None  # CPU milliseconds per image of this row (ranking + search + guard)
    rank_ms: float | None = None  # of which the ranking (the generator or the attribution)

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
    # The published protocols (nice.evaluate.faithfulness), for comparison with other papers.
    rise_deletion_auc: float | None = None  # black substrate; lower is better
    rise_insertion_auc: float | None = None  # blurred substrate; higher is better
    road_morf: float | None = None  # ROAD accuracy, most relevant imputed first (mean over levels); lower is better
    road_lerf: float | None = None  # least relevant first; higher is better
    road_curves: dict[str, list[float]] = field(default_factory=dict)  # level -> [MoRF, LeRF] accuracy
    infidelity: float | None = None  # captum, normalised; lower is better
    sensitivity_max: float | None = None  # captum; lower is better

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
    examples: Examples | None = None  # for the per-class figure; not part of to_dict()
    # Goals for NICE / best codec baseline and NICE / best other ranking (the scenes issue sets
    # its own: 0.30 and 0.90); one GOAL_RATIO elsewhere.
    goal_codec: float = GOAL_RATIO
    goal_ranking: float = GOAL_RATIO

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


class RateAccuracy:
    """Everything the comparison needs about one test set, decoded once."""

    def __init__(self, sources: Sequence[bytes], labels: Sequence[int], model: Any) -> None:
        self.model = model
        self.cfg = model.config
        self.channels = self.cfg.classifier.in_channels
        self.mode = "RGB" if self.channels == 3 else "L"
        self.labels = np.asarray(labels)
        decoded = [decode_image(d) for d in sources]
        sizes = sorted({d.size for d in decoded})
        if len(sizes) > 1:  # run_benchmark sends these to the native benchmark
            raise ValueError(f"RateAccuracy takes a test set of one image size; this one has {len(sizes)}")
        self.formats = [d.format for d in decoded]
        self.pixels = np.stack([image_pixels(d.image, self.mode) for d in decoded])
        self.src_bytes = np.array([len(d) for d in sources])
        self._classify()

    @classmethod
    def of_views(cls, views: np.ndarray, labels: Sequence[int], model: Any) -> "RateAccuracy":
        """The explanation metrics' view of a native test set: its images as the classifier
        sees them (no source bytes: the rate points are measured at native size)."""
        ra = cls.__new__(cls)
        ra.model, ra.cfg = model, model.config
        ra.channels = ra.cfg.classifier.in_channels
        ra.mode = "RGB" if ra.channels == 3 else "L"
        ra.labels = np.asarray(labels)
        ra.formats = ["PNG"] * len(views)
        ra.pixels = views
        ra.src_bytes = np.zeros(len(views), dtype=np.int64)
        ra._classify()
        return ra

    def _classify(self) -> None:
        model = self.model
        self.x = to_float_batch(self.pixels)
        self.clf = Classify(model.classifier)
        self.src_preds = self.clf.probs(self.x).argmax(1).numpy()
        self.src_acc = float((self.src_preds == self.labels).mean())
        self.mixer = make_mixer(self.cfg.mixing, self.cfg.gates.block)
        self.gates = HardConcrete(self.cfg.gates)
        self.codec = self.cfg.codec
        self.effort = final_effort(self.cfg.codec, self.cfg.search)  # what the search stores
        # The fixed path's one setting per image (its source's container, `codec.format`).
        self.fixed_rungs = [fixed_rung(self.codec, output_format(self.codec, f)) for f in self.formats]

    @functools.cached_property
    def nets(self) -> InferenceNets:
        """The networks every attribution runs on, tuned once for this set's image size."""
        return InferenceNets.tuned(self.model, self.x[:128])

    def head(self, k: int) -> "RateAccuracy":
        """The first `k` images, without decoding or classifying them again."""
        if k >= len(self.x):
            return self
        sub = copy.copy(self)
        sub.labels, sub.formats, sub.pixels, sub.x = self.labels[:k], self.formats[:k], self.pixels[:k], self.x[:k]
        sub.src_bytes, sub.src_preds, sub.fixed_rungs = self.src_bytes[:k], self.src_preds[:k], self.fixed_rungs[:k]
        sub.src_acc = float((sub.src_preds == sub.labels).mean())
        return sub

    # -- helpers ------------------------------------------------------------------------
    def _point(self, method: str, setting: str, out_bytes: np.ndarray, preds: np.ndarray, **kw: Any) -> RatePoint:
        acc = float((preds == self.labels).mean())
        return RatePoint(method, setting, float(out_bytes.sum() / self.src_bytes.sum()), acc,
                         (self.src_acc - acc) * 100, int((preds != self.src_preds).sum()), **kw)

    def _preds(self, pixels: Sequence[np.ndarray]) -> np.ndarray:
        return self.clf(np.stack(pixels))[0]

    # -- mixed-resolution path ------------------------------------------------------------
    def mixed(self, method: str, setting: str, z: torch.Tensor) -> tuple[RatePoint, RatePoint]:
        """The fixed path's encode of masks `z`: unguarded, and guarded (flip or no saving -> source)."""
        pixels = to_uint8_batch(self.mixer(self.x, z))
        sizes, back = reencode(pixels, self.mode, self.fixed_rungs, fixed_effort(self.codec))
        preds = self._preds(back)
        density = float(torch.nn.functional.interpolate(z, size=self.x.shape[-2:], mode="nearest").mean())
        raw = self._point(method, setting, sizes, preds, density=density)
        keep = (preds != self.src_preds) | (sizes >= self.src_bytes)
        g_sizes = np.where(keep, self.src_bytes, sizes)
        g_preds = np.where(keep, self.src_preds, preds)
        guarded = self._point(method, setting, g_sizes, g_preds, kept=int(keep.sum()), density=density, guarded=True)
        return raw, guarded

    def searched(self, method: str, setting: str, search: Search, masks: Callable[[slice], Masks],
                 density: float | None = None) -> RatePoint:
        """Every image through `search` with the mask source `masks(slice)` (the product's
        search with any ranking, or a per-image codec oracle); guarded by construction."""
        sizes = self.src_bytes.astype(np.int64).copy()
        preds = self.src_preds.copy()
        levels = []
        for s in range(0, len(self.x), 256):
            sl = slice(s, s + 256)
            outcomes = search.run(self.x[sl], masks(sl), self.src_preds[sl], self.src_bytes[sl],
                                  self.formats[sl], self.mode)
            for j, o in enumerate(outcomes):
                if o.choice is not None:
                    sizes[s + j], preds[s + j] = len(o.choice.data), o.choice.pred
                levels.append(o.choice.level if o.choice is not None else 1.0)
        return self._point(method, setting, sizes, preds, guarded=True, kept=int((sizes == self.src_bytes).sum()),
                           density=float(np.mean(levels)) if density is None else density)

    def ranked(self, method: str, setting: str, scores: torch.Tensor | None) -> RatePoint:
        """The product's per-image search with any block ranking; `scores=None` searches the
        codec ladders on the whole image only."""
        search = Search.product(self.cfg, self.clf, self.mixer)
        if scores is None:
            return self.searched(method, setting, search, lambda sl: Masks.whole_image(len(self.x[sl])))
        return self.searched(method, setting, search, lambda sl: Masks.ranking(scores[sl], self.cfg, self.x[sl]))

    # -- codec baselines --------------------------------------------------------------------
    def quality_sweep(self, fmt: str, qualities: Sequence[int]) -> list[RatePoint]:
        out = []
        for q in qualities:
            sizes, back = reencode(self.pixels, self.mode, Rung(fmt.lower(), quality=int(q)), self.effort)
            out.append(self._point(fmt.lower(), f"q{q}", sizes, self._preds(back)))
        return out

    def oracle(self, fmt: str = "JPEG") -> RatePoint:
        """Per image, the lowest quality whose decode keeps the source prediction."""
        return self.lowest_quality(fmt, "oracle" if fmt == "JPEG" else f"oracle-{fmt.lower()}",
                                   f"lowest {fmt} q keeping the prediction",
                                   lambda sl: Masks.whole_image(len(self.x[sl])))

    def lowest_quality(self, fmt: str, method: str, setting: str, masks: Callable[[slice], Masks],
                       density: float | None = None, lo: int = 1, hi: int = 95) -> RatePoint:
        """The search over every quality `lo`..`hi` of `fmt` (one ladder, the stored effort)."""
        search = Search.one_ladder(self.clf, self.mixer, [Rung(fmt.lower(), quality=q) for q in range(lo, hi + 1)],
                                   self.effort)
        return self.searched(method, setting, search, masks, density=density)

    def downsample(self, factor: int) -> RatePoint:
        sizes, back = downsampled(self.pixels, self.mode, factor, self.fixed_rungs, fixed_effort(self.codec))
        return self._point("downsample", f"1/{factor}", sizes, self._preds(back))

    def posterize(self, levels: int) -> RatePoint:
        """Grey images only: 1-bit (2 levels) or 2-bit (4 levels) PNG."""
        sizes, back = reencode(self.pixels, self.mode, Rung("png", levels=levels), self.effort)
        return self._point("posterize", f"{levels} levels PNG", sizes, self._preds(back))


def stored_ranking(cfg: Any, method: str, scores: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
    """The ranking a method is measured with. NICE's is the one the compressor stores for images
    `x` (`nice.ranking.search_ranking`: log-alpha smoothed over ~`search.rank_smooth_px` pixels,
    inert blocks last; the search cuts it at each keep level, the rank loss trains its smoothed
    order); the other methods' are their own scores, as published. Without `x`, NICE's smoothed scores
    alone: values to read (infidelity, sensitivity), where an inert block's has no effect."""
    if method != "nice":
        return scores
    if x is None:
        return smoothed_scores(cfg, scores)
    return search_ranking(cfg, scores, x)


def attribution_values(method: str, ranking: torch.Tensor) -> torch.Tensor:
    """Scores as attribution values (infidelity and sensitivity read values, not ranks):
    NICE's log-alpha as the probability that its gate is open, the others' as they are."""
    return torch.sigmoid(ranking) if method == "nice" else ranking


def explanation_scores(ra: RateAccuracy, scores: dict[str, torch.Tensor], seconds: dict[str, float],
                       steps: int = 10, fractions: Sequence[float] = (0.05, 0.1, 0.2), standard: bool = True,
                       road_limit: int = 200, sensitivity_limit: int = 50) -> list[ExplainScore]:
    """Per method: deletion / insertion AUC of the class probability with the product's own
    background (what is stored) and preservation accuracy at `fractions` kept; with `standard`
    also the published protocols (nice.evaluate.faithfulness): RISE deletion / insertion,
    ROAD MoRF / LeRF on the first `road_limit` images, captum infidelity, and captum
    sensitivity_max on the first `sensitivity_limit` (it recomputes the explanation)."""
    from nice.evaluate import faithfulness as fa

    bg = background(ra.x, ra.cfg.mixing)
    target = torch.from_numpy(ra.src_preds)
    labels = torch.from_numpy(ra.labels)
    block = ra.cfg.gates.block
    out = []
    for method, raw in scores.items():
        s = stored_ranking(ra.cfg, method, raw, ra.x)
        dele, ins = [], []
        for f in np.linspace(0, 1, steps + 1):
            z = topk_mask(s, float(f))
            kept = ra.mixer(ra.x, z)  # only the top blocks, the rest background
            removed = torch.lerp(ra.x, bg, upsample_gates(z, block, tuple(ra.x.shape[-2:])))
            ins.append(ra.clf.probs(kept).gather(1, target[:, None]).mean().item())
            dele.append(ra.clf.probs(removed).gather(1, target[:, None]).mean().item())
        x_axis = np.linspace(0, 1, steps + 1)
        pres = {}
        for f in fractions:
            preds = ra.clf.probs(ra.mixer(ra.x, topk_mask(s, f))).argmax(1).numpy()
            pres[f"{int(f * 100)}%"] = float((preds == ra.labels).mean())
        e = ExplainScore(method, float(np.trapezoid(dele, x_axis)), float(np.trapezoid(ins, x_axis)),
                         pres, seconds.get(method, 0.0))
        if standard:
            e.rise_deletion_auc, e.rise_insertion_auc = fa.rise_deletion_insertion(ra.clf.probs, ra.x, s, target, block)
            k = min(road_limit, len(ra.x))
            morf, lerf = fa.road(ra.clf.probs, ra.x[:k], s[:k], labels[:k], block)
            e.road_morf, e.road_lerf = float(np.mean(morf)), float(np.mean(lerf))
            e.road_curves = {f"{int(f * 100)}%": [m, le] for f, m, le in zip(fa.ROAD_LEVELS, morf, lerf)}
            values = attribution_values(method, stored_ranking(ra.cfg, method, raw))
            e.infidelity = fa.infidelity(ra.clf.probs, ra.x, bg, values, target, block)
            e.sensitivity_max = _sensitivity(ra, method, min(sensitivity_limit, len(ra.x)))
        out.append(e)
    return out


def _sensitivity(ra: RateAccuracy, method: str, k: int) -> float | None:
    """captum sensitivity_max of `method` recomputed on noisy copies of the first `k` images."""
    from nice.evaluate import faithfulness as fa

    if method not in LEARNED or k == 0:
        return None

    def explain(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        att = attribute(method, ra.model, x, target, background(x, ra.cfg.mixing), nets=ra.nets)
        return attribution_values(method, stored_ranking(ra.cfg, method, att.scores))

    return fa.sensitivity(explain, ra.x[:k], torch.from_numpy(ra.src_preds[:k]))


@dataclass
class Examples:
    """One test image per class for the explanation figure: each method's top blocks at NICE's
    density, and the mixed image NICE's mask at tau gives."""

    pixels: np.ndarray  # (n,H,W[,3]) uint8
    labels: np.ndarray
    preds: np.ndarray
    masks: dict[str, np.ndarray]  # method -> (n,H,W) bool, pixels kept
    mixed: np.ndarray  # (n,H,W[,3]) uint8


def per_class_examples(ra: RateAccuracy, scores: dict[str, torch.Tensor], tau: float,
                       methods: Sequence[str] = LEARNED,
                       limit: int = 10) -> Examples:
    """The first image of each class among `ra` (at most `limit`), from scores already computed."""
    picks = [int(np.flatnonzero(ra.labels == c)[0]) for c in np.unique(ra.labels)][:limit]
    idx = torch.tensor(picks, dtype=torch.long)
    gates = ra.gates.binarize(scores["nice"][idx].unsqueeze(1), tau)
    density = gates.mean(dim=(1, 2, 3))
    size = tuple(ra.x.shape[-2:])
    # Every method's top blocks at NICE's per-image density, each ranked as it is measured.
    masks = {m: upsample_gates(topk_mask(stored_ranking(ra.cfg, m, scores[m][idx], ra.x[idx]), density), ra.cfg.gates.block,
                               size)[:, 0].numpy().astype(bool) for m in methods if m in scores}
    return Examples(ra.pixels[picks], ra.labels[picks], ra.src_preds[picks], masks,
                    to_uint8_batch(ra.mixer(ra.x[idx], gates)))


def run_benchmark(sources: Sequence[bytes], labels: Sequence[int], model: Any, taus: Sequence[float] = (0.3, 0.5, 0.7, 0.9),
                  qualities: Sequence[int] = (5, 10, 20, 30, 50, 70, 90), explain_limit: int = 500,
                  methods: Sequence[str] = ("centre", "random", "gradcam", "saliency", "integrated_gradients"),
                  explain_methods: Sequence[str] = LEARNED, progress: bool = False,
                  goals: tuple[float, float] | None = None) -> Benchmark:
    """The full comparison on one test set. Explanation metrics use the first `explain_limit`
    images (occlusion costs one forward pass per window). Every image is decoded and
    classified once, and every attribution computed once (the explanation metrics and the
    per-class figure reuse the rate-accuracy run's)."""
    import sys

    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[evaluate {time.perf_counter() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    from nice.evaluate.native_benchmark import needs_native, run_native_benchmark

    if needs_native(sources, model):
        return run_native_benchmark(sources, labels, model, qualities=qualities, explain_limit=explain_limit,
                                    explain_methods=explain_methods, progress=progress, goals=goals)
    ra = RateAccuracy(sources, labels, model)
    say(f"{len(ra.x)} images, source accuracy {ra.src_acc * 100:.2f}%")
    points: list[RatePoint] = []
    target = torch.from_numpy(ra.src_preds)
    bg = background(ra.x, model.config.mixing)
    att = timed_attribute("nice", model, ra.x, target, bg, nets=ra.nets)
    nice = att.scores
    scores: dict[str, torch.Tensor] = {"nice": nice}
    seconds: dict[str, float] = {"nice": att.seconds_per_image}
    tau0 = model.config.guard.tau
    for tau in taus:
        raw, guarded = ra.mixed("nice", f"tau {tau}", ra.gates.binarize(nice.unsqueeze(1), tau))
        points += [raw, guarded]
    say("nice operating points done")
    # Other masks at NICE's own per-image density (at the model's tau).
    z0 = ra.gates.binarize(nice.unsqueeze(1), tau0)
    density = z0.mean(dim=(1, 2, 3))
    # The product's default: the per-image operating-point search, with NICE's ranking, with
    # every other ranking, and on the whole image (a codec oracle over the same ladders).
    levels = ", ".join(f"{k:g}" for k in model.config.search.keep)
    points.append(ra.ranked("nice", f"per-image search (keep {levels})", nice))
    points.append(ra.ranked("oracle-search", "same formats and ladders, whole image", None))
    say("per-image search: nice and whole-image oracle done")
    for m in methods:
        att = timed_attribute(m, model, ra.x, target, bg, nets=ra.nets)
        scores[m], seconds[m] = att.scores, att.seconds_per_image
        raw, guarded = ra.mixed(m, f"NICE density (tau {tau0})", topk_mask(att.scores, density))
        points += [raw, guarded]
        points.append(ra.ranked(m, "per-image search, same keep levels", att.scores))
        say(f"{m} masks done")
    for fmt in ("JPEG", "WEBP"):
        points += ra.quality_sweep(fmt, qualities)
    say("quality sweeps done")
    points += [ra.oracle("JPEG"), ra.oracle("WEBP")]
    # NICE with the same per-image search: the mixed image at the lowest quality that keeps
    # the prediction (the fair match for the oracles).
    for fmt in ("JPEG", "WEBP"):
        points.append(ra.lowest_quality(fmt, "nice", f"tau {tau0} + lowest {fmt} q", lambda sl: Masks.given(z0[sl]),
                                        density=float(density.mean())))
    points += [ra.downsample(2), ra.downsample(4)]
    if ra.channels == 1:
        points += [ra.posterize(2), ra.posterize(4)]
    say("oracle, downsampling, posterisation done")

    # Explanations on a subset: every learned method, on the same images; attributions the
    # rate-accuracy run already made are reused (their time per image was measured there).
    k = min(explain_limit, len(ra.x))
    sub = ra.head(k)
    sub_target = torch.from_numpy(sub.src_preds)
    sub_bg = background(sub.x, model.config.mixing)
    sub_scores, sub_seconds = {}, {}
    for m in explain_methods:
        if m in scores:
            sub_scores[m], sub_seconds[m] = scores[m][:k], seconds[m]
        else:
            att = timed_attribute(m, model, sub.x, sub_target, sub_bg, nets=sub.nets)
            sub_scores[m], sub_seconds[m] = att.scores, att.seconds_per_image
        say(f"explanations: {m} {sub_seconds[m] * 1000:.2f} ms/image")
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
                     channels=ra.channels, best_codec_baseline=best_codec, best_ranking_baseline=best_ranking,
                     examples=per_class_examples(sub, sub_scores, tau0))
