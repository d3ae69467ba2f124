"""The classifier's view: the only way a classifier (and its mask generator) sees an image.

A view is a fixed square input (`classifier.image_size`), a resize policy, the classifier's
channels and (inside the network, as torchvision weights carry their transforms) its
normalisation. Any source size is valid input: training, evaluation, compression, the guard
and the search all go through `View.apply`, so a prediction always means the same thing.

Policies (`classifier.view`):
- `letterbox` (default): the whole image scaled to fit, aspect kept, padded with its mean
  colour. Nothing of the photo is invisible to the classifier (so nothing is flattened
  without the classifier having seen it) and objects are not distorted; square datasets see
  exactly `resize`.
- `resize`: the whole image squashed to the square.
- `center_crop`: the shorter side scaled to `image_size / crop_fraction`, then the centre
  square (torchvision's classification presets: 256 -> 224). Pixels outside the crop are
  never seen by the classifier, so they carry no gate and are stored as background.

`Geometry` maps native pixels onto the view (`view = native * scale + offset`, per axis); an
image already at the view's size and channels is passed through untouched (the identity
view), which keeps small-image datasets bit-identical to a model without views.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from nice.config import VIEW_POLICIES, ClassifierConfig

POLICIES = VIEW_POLICIES
# Pillow's reducing_gap: integer box reduction first, then the antialiased filter; >= 3 is
# indistinguishable from the exact resample and several times faster on camera photos.
REDUCING_GAP = 3.0


@dataclass(frozen=True)
class Geometry:
    """Where a native image (height x width) lands in the view: `content` is the resized size
    (rh, rw) and `offset` (oy, ox) its top-left corner in the view (negative when cropped)."""

    height: int
    width: int
    size: int
    content: tuple[int, int]
    offset: tuple[int, int]

    @property
    def identity(self) -> bool:
        return (self.height, self.width) == (self.size, self.size) and self.content == (self.size, self.size)

    @property
    def scale(self) -> float:
        """View pixels per native pixel (the smaller of the two axes)."""
        return min(self.content[0] / self.height, self.content[1] / self.width)

    def view_span(self, start: np.ndarray, stop: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
        """Native pixel ranges [start, stop) along `axis` (0 rows, 1 columns) -> view ranges."""
        s = self.content[axis] / (self.height, self.width)[axis]
        return start * s + self.offset[axis], stop * s + self.offset[axis]


class View:
    """`apply` maps uint8 pixels (H,W) or (H,W,3) of any size to the classifier's input
    (S,S[,C]); `native_mask` maps the generator's gate grid back onto native blocks."""

    def __init__(self, cfg: ClassifierConfig) -> None:
        if cfg.view not in POLICIES:
            raise ValueError(f"classifier.view must be one of {POLICIES}, got {cfg.view!r}")
        if not 0 < cfg.crop_fraction <= 1:
            raise ValueError("classifier.crop_fraction must be in (0, 1]")
        self.size = int(cfg.image_size)
        self.policy = cfg.view
        self.crop_fraction = float(cfg.crop_fraction)
        self.channels = int(cfg.in_channels)

    @classmethod
    def of(cls, cfg: ClassifierConfig) -> "View | None":
        """The view of a classifier; None for a legacy model with no fixed size (image_size 0)."""
        return cls(cfg) if cfg.image_size else None

    def geometry(self, height: int, width: int) -> Geometry:
        s = self.size
        if self.policy == "resize":
            return Geometry(height, width, s, (s, s), (0, 0))
        if self.policy == "letterbox":
            f = s / max(height, width)
            rh, rw = max(1, min(s, round(height * f))), max(1, min(s, round(width * f)))
            return Geometry(height, width, s, (rh, rw), ((s - rh) // 2, (s - rw) // 2))
        side = s / self.crop_fraction
        f = side / min(height, width)
        rh, rw = max(s, round(height * f)), max(s, round(width * f))
        return Geometry(height, width, s, (rh, rw), (-((rh - s) // 2), -((rw - s) // 2)))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """One image -> its view, uint8 (S,S) or (S,S,3) in the classifier's channels."""
        g = self.geometry(pixels.shape[0], pixels.shape[1])
        out = pixels if g.identity else self._resample(pixels, g)
        if self.channels == 3 and out.ndim == 2:
            out = np.repeat(out[..., None], 3, axis=2)  # a grey image is a valid colour image
        return out

    def batch(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Images of any mix of shapes -> one uint8 batch (N,S,S[,C]) (no copy for an identity
        batch already in the classifier's channels)."""
        if isinstance(images, np.ndarray) and images.ndim >= 3:
            h, w = images.shape[1:3]
            if self.geometry(h, w).identity and (images.ndim == 4) == (self.channels == 3):
                return images
        return np.stack([self.apply(im) for im in images])

    def tensor(self, x: torch.Tensor) -> torch.Tensor:
        """A float image (C,H,W) in [0,1] -> its view (C',S,S) (training and evaluation data)."""
        h, w = x.shape[-2:]
        if self.geometry(h, w).identity and x.shape[0] == self.channels:
            return x
        arr = (x.clamp(0, 1) * 255.0).round().to(torch.uint8)
        arr = arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy()
        out = self.apply(arr)
        v = torch.from_numpy(out if out.flags.writeable and out.flags.c_contiguous else np.array(out))
        v = v.unsqueeze(0) if v.ndim == 2 else v.permute(2, 0, 1)
        return v.float().div_(255.0)

    def _resample(self, pixels: np.ndarray, g: Geometry) -> np.ndarray:
        rh, rw = g.content
        img = Image.fromarray(pixels)
        if (rh, rw) != pixels.shape[:2]:
            img = img.resize((rw, rh), Image.Resampling.BILINEAR, reducing_gap=REDUCING_GAP)
        arr = np.asarray(img)
        oy, ox = g.offset
        if self.policy == "center_crop":
            return np.ascontiguousarray(arr[-oy:-oy + g.size, -ox:-ox + g.size])
        if (rh, rw) == (g.size, g.size):
            return np.ascontiguousarray(arr)
        # letterbox: pad with the content's mean colour (what a flattened background looks like)
        fill = arr.reshape(-1, *arr.shape[2:]).mean(axis=0).round().astype(np.uint8)
        out = np.empty((g.size, g.size, *arr.shape[2:]), dtype=np.uint8)
        out[...] = fill
        out[oy:oy + rh, ox:ox + rw] = arr
        return out

    def native_mask(self, z: np.ndarray, g: Geometry, gate_block: int, block: int) -> np.ndarray:
        """A view gate grid (gh,gw) of `gate_block`-pixel cells -> a native grid of `block`-pixel
        blocks (ceil(H/block), ceil(W/block)), conservatively: a native block is kept (1) when
        any open view gate lies over it. Blocks outside a centre crop have no gate: background."""
        if g.identity and block == gate_block:
            return z.astype(np.uint8)
        gh, gw = z.shape
        prefix = np.zeros((gh + 1, gw + 1), dtype=np.int64)
        prefix[1:, 1:] = np.cumsum(np.cumsum(z.astype(np.int64), axis=0), axis=1)
        spans = []
        for axis, (n, cells) in enumerate(((g.height, gh), (g.width, gw))):
            start = np.arange(0, n, block, dtype=np.float64)
            stop = np.minimum(start + block, n)
            v0, v1 = g.view_span(start, stop, axis)
            c0 = np.clip(np.floor(v0 / gate_block), 0, cells).astype(np.int64)
            c1 = np.clip(np.ceil(v1 / gate_block), 0, cells).astype(np.int64)
            spans.append((c0, np.maximum(c1, c0)))
        (r0, r1), (k0, k1) = spans
        count = (prefix[np.ix_(r1, k1)] - prefix[np.ix_(r0, k1)] - prefix[np.ix_(r1, k0)]
                 + prefix[np.ix_(r0, k0)])
        return (count > 0).astype(np.uint8)


AUGMENTS = ("auto", "crop", "none")
CROP_RATIO = (3 / 4, 4 / 3)


class Augment:
    """Training augmentation that respects the view: a random resized crop of the native image
    (torchvision's RandomResizedCrop box: `scale` of the area, aspect 3:4..4:3), then the view's
    own policy, so a training crop reaches the network exactly as a stored image would.
    `auto` crops only images larger than the view on both sides (see ClassifierTrainConfig)."""

    def __init__(self, view: View, mode: str = "auto", scale: Sequence[float] = (0.35, 1.0)) -> None:
        if mode not in AUGMENTS:
            raise ValueError(f"train_classifier.augment must be one of {AUGMENTS}, got {mode!r}")
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"train_classifier.crop_scale must be 0 < low <= high <= 1, got {tuple(scale)}")
        self.view, self.mode, self.scale = view, mode, (lo, hi)

    @classmethod
    def of(cls, view: "View | None", cfg: Any) -> "Augment | None":
        """The augmentation of `cfg` (a ClassifierTrainConfig); None when it can never crop."""
        if view is None or cfg.augment == "none" or tuple(cfg.crop_scale) == (1.0, 1.0):
            return None
        return cls(view, cfg.augment, cfg.crop_scale)

    def crops(self, height: int, width: int) -> bool:
        return self.mode == "crop" or min(height, width) > self.view.size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A float image (C,H,W) in [0,1] -> a random crop of it through the view (C',S,S)."""
        from torchvision.transforms import RandomResizedCrop

        if self.crops(*x.shape[-2:]):
            i, j, h, w = RandomResizedCrop.get_params(x, list(self.scale), list(CROP_RATIO))
            x = x[..., i:i + h, j:j + w]
        return self.view.tensor(x)


def native_block(g: Geometry, gate_block: int, codec_block: int) -> int:
    """The native block size of an image's mask: the gate block where the native image is no
    larger than the view (cheap, and the identity view stays exactly the model's grid), else
    the codec's block (16 px: a 4:2:0 JPEG/WebP macroblock, so kept and flat regions never
    share one)."""
    if max(g.height, g.width) <= g.size:
        return gate_block
    return codec_block


def native_pool(g: Geometry, pool: int, block: int) -> int:
    """The background's low-res block at native size: the view's `pool` pixels scaled to
    native pixels, rounded to a multiple of the native block (flat blocks stay codec-aligned)."""
    if g.identity:
        return pool
    return max(block, block * round(pool / max(g.scale, 1e-9) / block))
