"""Compress images with a NICE model: decode -> classify -> mask -> mix -> encode -> guard.

Default: the per-image operating-point search (nice/compress/search.py) stores, per image,
the smallest candidate over keep levels x formats x qualities whose decode keeps the
source's top-1 class. With `search.enabled = False`, the fixed path of DESIGN.md §3: the
mask at `tau`, the configured codec, and the guard (decode, classify; on a flip a denser
mask at a lower tau, failing that the source bytes). Either way an output is never larger
than its source and never changes the prediction. Work is batched per image shape.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

import numpy as np
import torch

from nice.bundle import NiceModel
from nice.classify import Classify
from nice.compress.savings import empty_row
from nice.codec import Rung, final_effort, fixed_effort, fixed_rung, output_format, search_formats
from nice.compress.native import NativeImage, NativeSearch
from nice.compress.search import Masks, Outcome, Search
from nice.config import MixingConfig, NiceConfig
from nice.gates import HardConcrete
from nice.imageio import DecodedImage, ImageRejected, decode_image, to_float_batch
from nice.mixing import make_mixer
from nice.view import Geometry, View, native_block, native_pool
from nice.models.fuse import fuse_for_inference, tuned_for_cpu


# Native pixels decoded at once (~150 MB of RGB): a chunk of 12-megapixel photos is 4 images.
DEFAULT_PIXEL_BUDGET = 48_000_000


@dataclass
class SourceItem:
    uri: str
    data: bytes
    key: str = ""  # relative to the source root; outputs mirror it
    etag: str = ""
    label: int | None = None


@dataclass
class ItemResult:
    row: dict[str, Any]
    output: bytes | None  # what to store at DST (None: nothing, e.g. unreadable source)
    format_out: str | None = None


@dataclass
class _Work:
    index: int
    item: SourceItem
    decoded: DecodedImage
    x: np.ndarray  # decoded pixels at native size, uint8 (H,W) or (H,W,3), in the stored mode
    started: float
    store_mode: str = ""  # the mode written out (L stays L even when a colour model reads it)
    pred_src: int = -1
    prob_src: float = 0.0
    tried: int = 0
    block: int = 0  # the stored mask's block at native size


def check_job_config(job: NiceConfig, model: NiceConfig) -> None:
    """The model fixes architecture, gates and mixing; a job may change codec, guard and search."""
    if (job.gates, job.mixing, job.classifier) != (model.gates, model.mixing, model.classifier):
        raise ValueError("job config disagrees with the model on gates/mixing/classifier")


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Compressor:
    """Holds a loaded model and the job's config; `compress` turns source items into rows."""

    def __init__(self, model: NiceModel, cfg: NiceConfig | None = None, run_id: str = "",
                 device: str | torch.device = "cpu", batch_size: int = 64,
                 pixel_budget: int = DEFAULT_PIXEL_BUDGET,
                 ranking: Callable[[torch.Tensor, np.ndarray], torch.Tensor] | None = None) -> None:
        """`ranking`: another block ranking in place of the generator's (a float batch of
        views and their top-1 -> (N,h,w) scores on the gate grid), searched and guarded
        exactly as the generator's is (the evaluation's baselines at native size)."""
        self.cfg = cfg or model.config
        check_job_config(self.cfg, model.config)
        self.lineage = model.lineage()  # before any fusing: the digest is of the weights as trained
        self.device = torch.device(device)
        # On CPU each network runs in whichever of eager/frozen x NCHW/channels-last was
        # fastest on a batch of the model's input size (the choice differs per architecture).
        side = self.cfg.classifier.image_size or 64
        example = torch.rand(min(batch_size, 256), self.cfg.classifier.in_channels, side, side)
        self.classify = Classify(model.classifier, self.device, tune_example=example)
        generator = fuse_for_inference(model.generator).to(self.device).eval()  # a features generator's trunk has BatchNorm
        self.gen_format = torch.contiguous_format
        if self.device.type == "cpu":
            generator, self.gen_format = tuned_for_cpu(generator, example, trace=False)  # pads by input size
        self.generator = generator
        self.ranking = ranking
        self.rank_seconds = 0.0  # time spent ranking blocks (generator or `ranking`), for the evaluation
        self.model_uri = self.lineage.uri
        self.run_id = run_id
        self.batch_size = batch_size
        self.gates = HardConcrete(self.cfg.gates)
        self.mixer = make_mixer(self.cfg.mixing, self.cfg.gates.block)
        self.config_hash = self.cfg.hash()
        g = self.cfg.guard
        self.taus = [g.tau] + [t for t in g.tau_steps if t < g.tau]
        make = Search.product if self.cfg.search.enabled else Search.fixed
        self.search = make(self.cfg, self.classify, self.mixer)
        self.view = View.of(self.cfg.classifier)
        self.pixel_budget = pixel_budget
        sc = self.cfg.search
        effort = final_effort(self.cfg.codec, sc) if sc.enabled else fixed_effort(self.cfg.codec)
        self.native = NativeSearch(self.view, self.view_classify, self.cfg.mixing, effort,
                                   sc.native_tries if sc.enabled else len(self.taus), sc.native_proxy_pixels,
                                   sc.native_qualities if sc.enabled else ())

    # -- public -----------------------------------------------------------------------
    def compress(self, items: list[SourceItem]) -> list[ItemResult]:
        """Rows (and outputs) for `items`, in order. Images are decoded a chunk at a time, a
        chunk bounded by `pixel_budget` native pixels (not an image count), so memory stays
        flat however large the photos are; the networks see each chunk as one batch of views."""
        results: list[ItemResult | None] = [None] * len(items)
        chunk: list[_Work] = []
        pixels = 0
        for i, item in enumerate(items):
            t0 = time.perf_counter()
            try:
                work = self._prepare(i, item, t0)
            except ImageRejected as rej:
                results[i] = self.rejected(item, rej.status, rej.reason, t0)
                continue
            chunk.append(work)
            pixels += work.x.shape[0] * work.x.shape[1]
            if pixels >= self.pixel_budget or len(chunk) >= self.batch_size:
                self._run_chunk(chunk, results)
                chunk, pixels = [], 0
        if chunk:
            self._run_chunk(chunk, results)
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def log_alpha(self, x: torch.Tensor) -> torch.Tensor:
        """The generator's gate logits (N,1,h,w) for a float batch."""
        return self.generator(x.to(self.device).contiguous(memory_format=self.gen_format)).float().cpu()

    def masks(self, log_alpha: torch.Tensor, x: torch.Tensor) -> Masks:
        """The mask source of this job (views `x`): the generator's ranking at the search's keep
        levels, or on the fixed path its gates at tau and the guard's lower taus."""
        if self.cfg.search.enabled:
            return Masks.ranking(log_alpha[:, 0], self.cfg, x)
        return Masks.thresholds(log_alpha, self.gates, self.taus, self.cfg.guard.dilate)

    def view_classify(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-1 and its probability of uint8 images of one shape, through the classifier's view."""
        return self.classify(self.view.batch(pixels) if self.view is not None else pixels)

    # -- steps ------------------------------------------------------------------------
    def _prepare(self, index: int, item: SourceItem, t0: float) -> _Work:
        decoded = decode_image(item.data, self.cfg.guard.max_pixels)
        cc = self.cfg.classifier
        store_mode = decoded.mode
        if store_mode == "RGB" and cc.in_channels == 1:
            raise ImageRejected("skipped", "RGB image but the classifier takes greyscale input")
        w, h = decoded.size
        if self.view is None and cc.in_channels == 3 and store_mode == "L":
            decoded.image = decoded.image.convert("RGB")  # legacy native-size model: reads RGB
        # A grey image is a valid colour image: the view reads it as RGB, it is stored grey.
        return _Work(index=index, item=item, decoded=decoded, x=decoded.pixels(), started=t0,
                     store_mode=store_mode)

    def _run_chunk(self, chunk: list[_Work], results: list[ItemResult | None]) -> None:
        if self.view is None:  # legacy model without a view: each shape is its own batch
            groups: dict[tuple[int, ...], list[_Work]] = {}
            for w in chunk:
                groups.setdefault((*w.x.shape, w.store_mode), []).append(w)
            for group in groups.values():
                for w, res in self._run_views(group, np.stack([w.x for w in group])):
                    results[w.index] = res
            return
        for w, res in self._run_views(chunk, self.view.batch([w.x for w in chunk])):
            results[w.index] = res

    @torch.inference_mode()
    def _run_views(self, works: list[_Work], views: np.ndarray) -> list[tuple[_Work, ItemResult]]:
        """Classify and mask one batch of views (any mix of native shapes), then search each
        native shape: view-sized images in the batched search, small ones with every rung at
        native size, large ones through the native search."""
        xv = to_float_batch(views)
        pred, conf = self.classify.top1(xv)
        t0 = time.perf_counter()
        if self.ranking is not None and self.cfg.search.enabled:
            with torch.inference_mode(False):  # gradient rankings need autograd
                scores = self.ranking(xv.clone(), np.asarray(pred))
            masks = Masks.ranking(scores.detach().float(), self.cfg, xv)
        else:
            masks = self.masks(self.log_alpha(xv), xv)
        self.rank_seconds += time.perf_counter() - t0
        for i, w in enumerate(works):
            w.pred_src, w.prob_src = int(pred[i]), float(conf[i])
        shapes: dict[tuple[int, ...], list[int]] = {}
        for i, w in enumerate(works):
            shapes.setdefault((*w.x.shape, w.store_mode), []).append(i)
        out: list[tuple[_Work, ItemResult]] = []
        for idx in shapes.values():
            group = [works[i] for i in idx]
            h, w_ = group[0].x.shape[:2]
            geom = self.view.geometry(h, w_) if self.view is not None else None
            sub = masks.subset(idx) if len(idx) < len(works) else masks
            block = self.cfg.gates.block if geom is None else \
                native_block(geom, self.cfg.gates.block, self.cfg.search.native_block)
            for w in group:
                w.block = block
            if geom is None or geom.identity:
                outcomes = self.search.run(xv[idx], sub, [w.pred_src for w in group],
                                           [len(w.item.data) for w in group], [w.decoded.format for w in group],
                                           "RGB" if xv.shape[1] == 3 else "L", group[0].store_mode)
            elif h * w_ <= self.cfg.search.full_search_pixels:
                outcomes = self._search_small(group, sub, geom, block)
            else:
                levels = sub.levels
                if sub.kind == "keep":  # sparser levels for large photos: one batch of views tries them all
                    levels = self.cfg.search.native_levels(levels)
                grids = {lv: sub.make(lv)[:, 0].numpy() for lv in levels}  # each level once per group
                outcomes = [self._search_native(w, {lv: g[j] for lv, g in grids.items()}, geom, block)
                            for j, w in enumerate(group)]
            out.extend((w, self._result(w, o, masks)) for w, o in zip(group, outcomes))
        return out

    def _search_small(self, group: list[_Work], masks: Masks, geom: Geometry, block: int) -> list[Outcome]:
        """Small images off the view's size: the full search, every candidate at native size."""
        gc = self.cfg.gates
        pool = native_pool(geom, self.cfg.mixing.pool, block)
        mixing = MixingConfig(mode=self.cfg.mixing.mode, pool=pool)
        native = masks.mapped(lambda z: torch.from_numpy(np.stack([
            self.view.native_mask(zi[0].numpy(), geom, gc.block, block) for zi in z]))[:, None].float())
        search = self.search.using(self.view_classify, make_mixer(mixing, block))
        mode = group[0].store_mode
        return search.run(to_float_batch(np.stack([w.x for w in group])), native, [w.pred_src for w in group],
                          [len(w.item.data) for w in group], [w.decoded.format for w in group], mode, mode)

    def _search_native(self, w: _Work, grids: dict[float, np.ndarray], geom: Geometry, block: int) -> Outcome:
        """One large photo: `grids` its view gate grid at each mask level."""
        levels = [(lv, self.view.native_mask(z, geom, self.cfg.gates.block, block)) for lv, z in grids.items()]
        d = w.decoded
        detail = self.cfg.search.native_detail
        img = NativeImage(w.x, block, native_pool(geom, self.cfg.mixing.pool, block), len(w.item.data),
                          w.pred_src, icc=d.icc, exif=None if self.cfg.codec.strip_metadata else d.exif,
                          detail=max(1, int(1 / (geom.scale * detail))) if detail > 0 else 1)
        o = self.native.run(img, levels, self._native_rungs(d.format, w.store_mode),
                            self._native_rungs(d.format, w.store_mode, fallback=True))
        w.tried = o.levels_tried  # native encodes verified
        return o

    def _native_rungs(self, source_format: str, store_mode: str, fallback: bool = False) -> list[Rung]:
        """The native search's formats (`fallback`: those retried when every try flipped)."""
        if not self.cfg.search.enabled:
            return [] if fallback else [fixed_rung(self.cfg.codec, output_format(self.cfg.codec, source_format))]
        sc = self.cfg.search
        fmts = search_formats(sc.native_fallback if fallback else sc.native_formats, source_format)
        if store_mode == "L":  # lossy WebP/AVIF are YUV: a grey photo would come back tinted
            fmts = [f for f in fmts if f in ("jpeg", "png")] or ([] if fallback else ["jpeg"])
        q = sc.native_quality
        return [Rung(f, levels=256) if f == "png" else Rung(f, quality=q) for f in fmts]

    def _result(self, w: _Work, o: Outcome, masks: Masks) -> ItemResult:
        c = o.choice
        if masks.first_wins:
            w.tried = o.levels_tried
        if c is None:
            why = ("output would not be smaller than the source" if o.too_big
                   else f"prediction changed at every tau in {self.taus}" if masks.kind == "tau"
                   else "no candidate was smaller than the source and kept the prediction")
            if o.notes:
                why += "; " + "; ".join(dict.fromkeys(o.notes))
            return self._kept(w, why)
        tau = c.level if masks.kind == "tau" else None
        params = c.params if tau is not None else dict(c.params, keep=c.level)
        res = self._compressed(w, c.z, tau, c.fmt, c.data, c.pred, c.prob, params)
        if o.notes:
            res.row["error"] = "; ".join(dict.fromkeys(o.notes))  # what a codec could not write
        return res

    # -- rows -------------------------------------------------------------------------
    def _base_row(self, item: SourceItem) -> dict[str, Any]:
        row = empty_row()
        row.update(run_id=self.run_id, source_uri=item.uri, source_key=item.key or item.uri,
                   source_etag=item.etag or md5_hex(item.data), source_bytes=len(item.data), label=item.label,
                   model_uri=self.model_uri, model_run_id=self.lineage.run_id, model_digest=self.lineage.digest,
                   config_hash=self.config_hash, block=self.cfg.gates.block, guard_retries=0,
                   processed_at=datetime.now(timezone.utc))
        return row

    def rejected(self, item: SourceItem, status: str, reason: str, t0: float | None = None) -> ItemResult:
        """A `skipped` or `failed` row for an item that never reached the models."""
        row = self._base_row(item)
        elapsed = (time.perf_counter() - t0) * 1000.0 if t0 is not None else 0.0
        row.update(status=status, error=reason, elapsed_ms=elapsed)
        # Skipped images are still valid files: keep them at DST so the archive stays complete.
        return ItemResult(row=row, output=item.data if status == "skipped" else None)

    def _common(self, w: _Work) -> dict[str, Any]:
        row = self._base_row(w.item)
        width, height = w.decoded.size
        row.update(width=width, height=height, format_in=w.decoded.format.lower(), block=w.block or self.cfg.gates.block,
                   pred_source=w.pred_src, prob_source=w.prob_src,
                   guard_retries=max(w.tried - 1, 0),
                   elapsed_ms=(time.perf_counter() - w.started) * 1000.0)
        return row

    def _compressed(self, w: _Work, z: torch.Tensor, tau: float | None, fmt: str, data: bytes,
                    pred: int, prob: float, params: dict[str, Any]) -> ItemResult:
        row = self._common(w)
        grid = z[0, 0].to(torch.uint8).numpy()
        row.update(status="compressed", output_bytes=len(data), saved_bytes=len(w.item.data) - len(data),
                   ratio=len(data) / len(w.item.data), format_out=fmt,
                   codec_params=json.dumps(params, sort_keys=True), tau=tau,
                   mask_density=_pixel_density(grid, w.block, w.x.shape[0], w.x.shape[1]),
                   mask=np.packbits(grid.ravel()).tobytes(),
                   mask_height=int(grid.shape[0]), mask_width=int(grid.shape[1]),
                   pred_output=pred, prob_output=prob)
        return ItemResult(row=row, output=data, format_out=fmt)

    def _kept(self, w: _Work, why: str) -> ItemResult:
        row = self._common(w)
        fmt = w.decoded.format.lower()
        row.update(status="kept_original", output_bytes=len(w.item.data), saved_bytes=0, ratio=1.0,
                   format_out=fmt, codec_params="{}", pred_output=w.pred_src, prob_output=w.prob_src,
                   error=why, mask_density=1.0)
        return ItemResult(row=row, output=w.item.data, format_out=None)


def _pixel_density(grid: np.ndarray, block: int, height: int, width: int) -> float:
    """Fraction of pixels under open gates; partial edge blocks count only their real pixels."""
    rows = np.full(grid.shape[0], block, dtype=np.int64)
    cols = np.full(grid.shape[1], block, dtype=np.int64)
    rows[-1] = height - block * (grid.shape[0] - 1)
    cols[-1] = width - block * (grid.shape[1] - 1)
    return float(rows @ grid.astype(np.int64) @ cols) / (height * width)


def unpack_mask(row: dict[str, Any]) -> np.ndarray:
    """The gate grid stored in a savings row, as a (mask_height, mask_width) uint8 array."""
    h, w = row["mask_height"], row["mask_width"]
    bits = np.unpackbits(np.frombuffer(row["mask"], dtype=np.uint8))[: h * w]
    return bits.reshape(h, w)
