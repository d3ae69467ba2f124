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
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.codec import codec_params, encode, output_format
from nice.config import NiceConfig
from nice.gates import HardConcrete
from nice.imageio import DecodedImage, ImageRejected, decode_image, decoded_pixels, to_float_batch, to_uint8_batch
from nice.mixing import make_mixer
from nice.models.fuse import fuse_for_inference, tuned_for_cpu
from nice.compress.savings import empty_row
from nice.compress.search import OperatingPointSearch


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
    x: np.ndarray  # decoded pixels, uint8 (H,W) or (H,W,3)
    started: float
    store_mode: str = ""  # the mode written out (L stays L even when a colour model reads it)
    pred_src: int = -1
    prob_src: float = 0.0
    tried: int = 0
    done: bool = False
    params: dict[str, Any] = field(default_factory=dict)


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class Compressor:
    """Holds a loaded model and the job's config; `compress` turns source items into rows."""

    def __init__(self, model: NiceModel, cfg: NiceConfig | None = None, run_id: str = "",
                 device: str | torch.device = "cpu", batch_size: int = 64) -> None:
        self.cfg = cfg or model.config
        # The model fixes architecture, gates and mixing; the job may change codec and guard.
        if (self.cfg.gates, self.cfg.mixing, self.cfg.classifier) != (
                model.config.gates, model.config.mixing, model.config.classifier):
            raise ValueError("job config disagrees with the model on gates/mixing/classifier")
        self.device = torch.device(device)
        # BatchNorm folded into the convolutions: same outputs, ~30% less classifier time. On
        # CPU each network then runs in whichever of eager/frozen x NCHW/channels-last was
        # fastest on a batch of the model's input size (the choice differs per architecture).
        classifier = fuse_for_inference(model.classifier).to(self.device)
        generator = model.generator.to(self.device).eval()
        self.formats = (torch.contiguous_format, torch.contiguous_format)
        if self.device.type == "cpu":
            side = self.cfg.classifier.image_size or 64
            example = torch.rand(min(batch_size, 256), self.cfg.classifier.in_channels, side, side)
            classifier, clf_fmt = tuned_for_cpu(classifier, example)
            generator, gen_fmt = tuned_for_cpu(generator, example, trace=False)  # pads by input size
            self.formats = (clf_fmt, gen_fmt)
        self.classifier, self.generator = classifier, generator
        self.model_uri = model.uri
        self.run_id = run_id
        self.batch_size = batch_size
        self.gates = HardConcrete(self.cfg.gates)
        self.mixer = make_mixer(self.cfg.mixing, self.cfg.gates.block)
        self.config_hash = self.cfg.hash()
        g = self.cfg.guard
        self.taus = [g.tau] + [t for t in g.tau_steps if t < g.tau]
        self.search = (OperatingPointSearch(self.cfg.search, self.cfg.codec, self._classify_pixels, self.mixer,
                                             self.cfg.gates.block)
                       if self.cfg.search.enabled else None)

    # -- public -----------------------------------------------------------------------
    def compress(self, items: list[SourceItem]) -> list[ItemResult]:
        results: list[ItemResult | None] = [None] * len(items)
        groups: dict[tuple[int, ...], list[_Work]] = {}
        for i, item in enumerate(items):
            t0 = time.perf_counter()
            try:
                work = self._prepare(i, item, t0)
            except ImageRejected as rej:
                results[i] = self.rejected(item, rej.status, rej.reason, t0)
                continue
            groups.setdefault((*work.x.shape, work.store_mode), []).append(work)  # shape fixes L vs RGB
        for group in groups.values():
            for start in range(0, len(group), self.batch_size):
                for work, res in self._run_batch(group[start:start + self.batch_size]):
                    results[work.index] = res
        return [r for r in results if r is not None]

    # -- steps ------------------------------------------------------------------------
    def _prepare(self, index: int, item: SourceItem, t0: float) -> _Work:
        decoded = decode_image(item.data, self.cfg.guard.max_pixels)
        cc = self.cfg.classifier
        store_mode = decoded.mode
        channels = 1 if store_mode == "L" else 3
        if channels == 1 and cc.in_channels == 3:
            # A grey image is a valid colour image: classify it as RGB, store it as grey again
            # (mixing keeps R = G = B, so the conversion back is exact).
            decoded.image = decoded.image.convert("RGB")
        elif channels != cc.in_channels:
            raise ImageRejected("skipped", f"{store_mode} image but the classifier takes greyscale input")
        w, h = decoded.size
        if cc.image_size and (w, h) != (cc.image_size, cc.image_size):
            raise ImageRejected("skipped", f"{w}x{h} image but the classifier takes {cc.image_size}x{cc.image_size}")
        # uint8 HxW(xC) pixels; converted to float once per batch in _run_batch.
        return _Work(index=index, item=item, decoded=decoded, x=decoded.pixels(), started=t0,
                     store_mode=store_mode)

    def _on_device(self, x: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=fmt)

    @torch.inference_mode()
    def _classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(self.classifier(self._on_device(x, self.formats[0])).float(), dim=1).cpu()
        conf, pred = probs.max(dim=1)
        return pred, conf

    def _classify_pixels(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pred, conf = self._classify(to_float_batch(pixels))
        return pred.numpy(), conf.numpy()

    @torch.inference_mode()
    def _run_batch(self, batch: list[_Work]) -> list[tuple[_Work, ItemResult]]:
        x = to_float_batch(np.stack([w.x for w in batch]))
        pred, conf = self._classify(x)
        log_alpha = self.generator(self._on_device(x, self.formats[1])).float().cpu()
        for i, w in enumerate(batch):
            w.pred_src, w.prob_src = int(pred[i]), float(conf[i])
        if self.search is not None:
            return self._run_search(batch, x, log_alpha)
        out: list[tuple[_Work, ItemResult]] = []
        pending = list(range(len(batch)))
        mode, store_mode = batch[0].decoded.mode, batch[0].store_mode
        for level, tau in enumerate(self.taus):
            if not pending:
                break
            # One tensor op per tau level for the whole batch; only the codec runs per image.
            idx = torch.tensor(pending)
            z_all = self.gates.binarize(log_alpha[idx], tau, self.cfg.guard.dilate)
            pixels = to_uint8_batch(self.mixer(x[idx], z_all))
            candidates = []
            for j, i in enumerate(pending):
                w = batch[i]
                pil = Image.fromarray(pixels[j], mode)
                if store_mode != mode:
                    pil = pil.convert(store_mode)
                fmt = output_format(self.cfg.codec, w.decoded.format)
                data = encode(pil, fmt, self.cfg.codec)
                w.tried = level + 1
                w.params = codec_params(self.cfg.codec, fmt, pil)
                if len(data) >= len(w.item.data):
                    # Denser masks only cost more bytes: keep the source now.
                    out.append((w, self._kept(w, "output would not be smaller than the source")))
                    continue
                back = decoded_pixels(data, mode)
                candidates.append((i, z_all[j:j + 1], fmt, data, back))
            next_pending = []
            if candidates:
                pred_out, conf_out = self._classify(to_float_batch(np.stack([c[4] for c in candidates])))
                for j, (i, z, fmt, data, _) in enumerate(candidates):
                    w = batch[i]
                    if int(pred_out[j]) == w.pred_src:
                        out.append((w, self._compressed(w, z, tau, fmt, data, int(pred_out[j]), float(conf_out[j]))))
                    else:
                        next_pending.append(i)
            pending = next_pending
        for i in pending:
            out.append((batch[i], self._kept(batch[i], f"prediction changed at every tau in {self.taus}")))
        return out

    def _run_search(self, batch: list[_Work], x: torch.Tensor, log_alpha: torch.Tensor) -> list[tuple[_Work, ItemResult]]:
        assert self.search is not None
        choices = self.search.run(x, log_alpha[:, 0], [w.pred_src for w in batch], [len(w.item.data) for w in batch],
                                  [w.decoded.format for w in batch], batch[0].decoded.mode, batch[0].store_mode)
        out = []
        for w, c in zip(batch, choices):
            if c is None:
                out.append((w, self._kept(w, "no candidate was smaller than the source and kept the prediction")))
                continue
            w.params = dict(c.params, keep=c.keep)
            out.append((w, self._compressed(w, c.z, None, c.fmt, c.data, c.pred, c.prob)))
        return out

    # -- rows -------------------------------------------------------------------------
    def _base_row(self, item: SourceItem) -> dict[str, Any]:
        row = empty_row()
        row.update(run_id=self.run_id, source_uri=item.uri, source_key=item.key or item.uri, source_etag=item.etag or md5_hex(item.data),
                   source_bytes=len(item.data), label=item.label, model_uri=self.model_uri,
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
        row.update(width=width, height=height, format_in=w.decoded.format.lower(),
                   pred_source=w.pred_src, prob_source=w.prob_src,
                   guard_retries=max(w.tried - 1, 0),
                   elapsed_ms=(time.perf_counter() - w.started) * 1000.0)
        return row

    def _compressed(self, w: _Work, z: torch.Tensor, tau: float | None, fmt: str, data: bytes,
                    pred: int, prob: float) -> ItemResult:
        row = self._common(w)
        grid = z[0, 0].to(torch.uint8).numpy()
        row.update(status="compressed", output_bytes=len(data), saved_bytes=len(w.item.data) - len(data),
                   ratio=len(data) / len(w.item.data), format_out=fmt,
                   codec_params=json.dumps(w.params, sort_keys=True), tau=tau,
                   mask_density=_pixel_density(grid, self.cfg.gates.block, w.x.shape[0], w.x.shape[1]),
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
