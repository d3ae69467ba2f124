"""Encoding mixed-resolution images as ordinary files, with exact byte counts.

Codecs are a registry keyed by format name so new ones (or per-region schemes) plug in
without touching the compression engine.
"""

from __future__ import annotations

import io
from typing import Any, Callable

from PIL import Image, features

from nice.config import CodecConfig

# Source format (PIL name) -> output format when the config says "source".
SOURCE_TO_OUTPUT = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif",
                    "GIF": "png", "BMP": "png", "TIFF": "png", "PPM": "png", "TGA": "png"}
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}
# Extensions that already denote an output format, so a source `a.jpeg` stays `a.jpeg`.
KNOWN_EXTENSIONS = {"jpeg": {".jpg", ".jpeg", ".jpe"}, "png": {".png"}, "webp": {".webp"}, "avif": {".avif"}}


def output_name(key: str, format_out: str | None) -> str:
    """The output key for a source key: the key itself while the container's extension still
    fits, else the key with the new extension appended (`a.png` -> `a.png.webp`). Appending
    (not replacing) keeps outputs one-to-one with sources (`a.png` and `a.jpg` never share an
    output) and leaves the key exactly as given (no path normalisation: `a/./b` stays
    unsafe and is refused at DST rather than aliased to `a/b`)."""
    name = key.rsplit("/", 1)[-1]
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > 0 else ""
    if format_out is None or suffix in KNOWN_EXTENSIONS[format_out]:
        return key
    return key + EXTENSIONS[format_out]


def _jpeg_params(cfg: CodecConfig, img: Image.Image) -> dict[str, Any]:
    params: dict[str, Any] = {"quality": cfg.quality, "optimize": cfg.jpeg_optimize,
                              "progressive": cfg.jpeg_progressive}
    if img.mode == "RGB":
        params["subsampling"] = cfg.jpeg_subsampling
    return params


def _png_params(cfg: CodecConfig, img: Image.Image) -> dict[str, Any]:
    return {"optimize": cfg.png_optimize, "compress_level": 9}


def _webp_params(cfg: CodecConfig, img: Image.Image) -> dict[str, Any]:
    if cfg.webp_lossless:
        return {"lossless": True, "quality": 100, "method": 6}
    return {"quality": cfg.quality, "method": 6}


def _avif_params(cfg: CodecConfig, img: Image.Image) -> dict[str, Any]:
    return {"quality": cfg.quality, "speed": 6}


PARAMS: dict[str, Callable[[CodecConfig, Image.Image], dict[str, Any]]] = {
    "jpeg": _jpeg_params, "png": _png_params, "webp": _webp_params, "avif": _avif_params,
}


def output_format(cfg: CodecConfig, source_format: str) -> str:
    fmt = cfg.format.lower()
    if fmt == "source":
        return SOURCE_TO_OUTPUT.get(source_format.upper(), "png")
    if fmt not in PARAMS:
        raise ValueError(f"unknown codec format {cfg.format!r}; expected source, {', '.join(PARAMS)}")
    return fmt


def codec_params(cfg: CodecConfig, fmt: str, img: Image.Image) -> dict[str, Any]:
    return PARAMS[fmt](cfg, img)


def encode(img: Image.Image, fmt: str, cfg: CodecConfig) -> bytes:
    """Encode with metadata stripped (nothing but pixels is passed to the writer)."""
    if fmt == "avif" and not features.check("avif"):
        raise RuntimeError("this Pillow build has no AVIF encoder")
    buf = io.BytesIO()
    img.save(buf, format=fmt.upper(), **codec_params(cfg, fmt, img))
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img
