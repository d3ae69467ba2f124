"""Decoding untrusted image bytes into a normalised PIL image, with reasons for rejections.

Every decode applies EXIF orientation and normalises the mode to `L` (greyscale) or `RGB`:
16-bit and float greyscale are scaled to 8 bits, palettes expanded, alpha composited on
white, CMYK/YCbCr/LAB converted. Rejections carry a status: `skipped` for inputs we choose
not to process (too large, wrong shape for the model), `failed` for inputs that are broken.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


class ImageRejected(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class DecodedImage:
    image: Image.Image  # mode L or RGB, orientation applied
    format: str  # PIL format name of the source (JPEG, PNG, ...)
    mode_in: str

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


def _normalise_mode(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        return Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        return _normalise_mode(img)
    if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(base, rgba)
        return out.convert("L" if mode in ("LA", "La") else "RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode one image file's bytes (first frame of animations) or raise ImageRejected."""
    if not data:
        raise ImageRejected("failed", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            fmt = img.format or "UNKNOWN"
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected("skipped", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
            img.load()
            mode_in = img.mode
            img = ImageOps.exif_transpose(img) if img.getexif().get(0x0112, 1) != 1 else img
            img = _normalise_mode(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("skipped", f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageRejected("failed", "not an image (format not recognised)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("failed", f"corrupt or truncated image: {exc}") from exc
    return DecodedImage(image=img, format=fmt, mode_in=mode_in)


def to_tensor(img: Image.Image) -> torch.Tensor:
    """PIL (L or RGB) -> float tensor (C,H,W) in [0,1]."""
    arr = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(arr.copy())
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div_(255.0)


def to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (C,H,W) in [0,1] -> PIL L or RGB, rounding to the nearest 8-bit level."""
    arr = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).cpu()
    if arr.shape[0] == 1:
        return Image.fromarray(arr[0].numpy(), "L")
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), "RGB")
