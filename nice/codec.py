"""The one candidate layer: what a stored file is made of and how its bytes are counted.

A *rung* is one codec setting (format, and a quality for lossy formats or posterised grey
levels for lossless ones); an *effort* is the writer's speed/size knobs around it (libwebp
method, PNG compression level, JPEG Huffman optimisation). `encode` turns uint8 pixels into
file bytes at a rung and an effort with no metadata written; `decode` reads our own files
back as pixels for re-classification. The fixed path, the per-image search, the evaluation's
codec baselines (sweeps, oracles, downsampling, posterisation) and the stored fine-tune all
encode through here, so a rung means the same bytes everywhere.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from PIL import Image, features

from nice.config import CodecConfig, SearchConfig
from nice.imageio import decoded_pixels

# Source format (PIL name) -> output format when the config says "source".
SOURCE_TO_OUTPUT = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif",
                    "GIF": "png", "BMP": "png", "TIFF": "png", "PPM": "png", "TGA": "png"}
EXTENSIONS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "avif": ".avif"}
# Extensions that already denote an output format, so a source `a.jpeg` stays `a.jpeg`.
KNOWN_EXTENSIONS = {"jpeg": {".jpg", ".jpeg", ".jpe"}, "png": {".png"}, "webp": {".webp"}, "avif": {".avif"}}
LOSSY = ("jpeg", "webp", "avif")
# Largest side each writer takes (libwebp 16,383; baseline JPEG 65,535; AV1 65,536; PNG 2^31-1)
# and, for AVIF, libavif's default decoder limit on the pixel count (a file that cannot be
# read back cannot be verified).
MAX_SIDE = {"webp": 16383, "jpeg": 65535, "avif": 65536, "png": 2**31 - 1}
MAX_PIXELS = {"avif": 16384 * 16384}


class CodecLimit(ValueError):
    """A candidate this format cannot write (too large, odd mode): a per-image outcome."""


def limit_reason(fmt: str, width: int, height: int) -> str | None:
    """Why `fmt` cannot hold a width x height image, or None when it can."""
    side = MAX_SIDE.get(fmt)
    if side is not None and max(width, height) > side:
        return f"{width}x{height} exceeds {fmt.upper()}'s limit of {side} pixels per side"
    area = MAX_PIXELS.get(fmt)
    if area is not None and width * height > area:
        return f"{width}x{height} exceeds {fmt.upper()}'s limit of {area} pixels"
    return None


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


def output_format(cfg: CodecConfig, source_format: str) -> str:
    fmt = cfg.format.lower()
    if fmt == "source":
        return SOURCE_TO_OUTPUT.get(source_format.upper(), "png")
    if fmt not in EXTENSIONS:
        raise ValueError(f"unknown codec format {cfg.format!r}; expected source, {', '.join(EXTENSIONS)}")
    return fmt


@dataclass(frozen=True)
class Rung:
    fmt: str  # jpeg | webp | avif | png
    quality: int | None = None  # lossy formats
    levels: int | None = None  # lossless formats: grey levels kept (256 = all)

    @property
    def lossless(self) -> bool:
        return self.levels is not None


@dataclass(frozen=True)
class Effort:
    """Writer knobs that trade encode time for bytes, never the decision a rung stands for.
    The search probes at `probe` effort and re-encodes its winner at `final` (lossless pixels
    do not depend on the effort: ~25x faster on grey images; a lossy re-encode is verified
    again): WebP at 224 px, effort 4 costs ~4x effort 0."""

    webp_method: int = 4
    webp_lossless_method: int = 6
    webp_lossless_quality: int = 100
    png_level: int = 9
    png_optimize: bool = True
    jpeg_optimize: bool = True
    jpeg_progressive: bool = False
    jpeg_subsampling: str = "4:2:0"
    avif_speed: int = 6

    def args(self, rung: Rung, mode: str) -> dict[str, Any]:
        """Pillow writer arguments for `rung` on pixels of `mode` (what a savings row records)."""
        if rung.fmt == "jpeg":
            p: dict[str, Any] = {"quality": rung.quality, "optimize": self.jpeg_optimize,
                                 "progressive": self.jpeg_progressive}
            if mode == "RGB":
                p["subsampling"] = self.jpeg_subsampling
            return p
        if rung.fmt == "webp":
            if rung.lossless:
                return {"lossless": True, "quality": self.webp_lossless_quality, "method": self.webp_lossless_method}
            return {"quality": rung.quality, "method": self.webp_method}
        if rung.fmt == "avif":
            return {"quality": rung.quality, "speed": self.avif_speed}
        if rung.fmt == "png":
            return {"optimize": True, "compress_level": self.png_level} if self.png_optimize else {
                "compress_level": self.png_level}
        raise ValueError(f"unknown codec format {rung.fmt!r}; expected one of {', '.join(EXTENSIONS)}")


def final_effort(codec: CodecConfig, search: SearchConfig) -> Effort:
    """What the search stores and the evaluation's codec baselines encode at."""
    return Effort(webp_method=search.webp_method, png_optimize=True, jpeg_optimize=True,
                  jpeg_progressive=codec.jpeg_progressive, jpeg_subsampling=codec.jpeg_subsampling)


def probe_effort(codec: CodecConfig, search: SearchConfig) -> Effort:
    """What the search probes at (and the stored fine-tune draws its candidates at)."""
    return Effort(webp_method=search.webp_probe_method, webp_lossless_method=2, webp_lossless_quality=50,
                  png_level=6, png_optimize=False, jpeg_optimize=True,
                  jpeg_progressive=codec.jpeg_progressive, jpeg_subsampling=codec.jpeg_subsampling)


def fixed_effort(codec: CodecConfig) -> Effort:
    """The fixed path's writer: one encode per candidate, libwebp at its highest effort."""
    return Effort(webp_method=6, png_optimize=codec.png_optimize, jpeg_optimize=codec.jpeg_optimize,
                  jpeg_progressive=codec.jpeg_progressive, jpeg_subsampling=codec.jpeg_subsampling)


def fixed_rung(codec: CodecConfig, fmt: str) -> Rung:
    """The fixed path's one setting for output format `fmt`."""
    if fmt == "png" or (fmt == "webp" and codec.webp_lossless):
        return Rung(fmt, levels=256)
    return Rung(fmt, quality=codec.quality)


def ladders(fmt: str, cfg: SearchConfig, grey: bool) -> list[list[Rung]]:
    """The ladders searched for one format, each from the cheapest rung to the most faithful.
    Grey images climb posterised grey levels, losslessly (WebP lossless of a 2-level digit is
    ~75 B where lossy WebP needs ~110 B, MNIST)."""
    out: list[list[Rung]] = []
    if grey and fmt == "webp":
        # Lossy WebP is YUV 4:2:0: a grey image decodes as (slightly) coloured RGB, which a grey
        # classifier or the next run would read as a colour image. Grey stays grey: lossless only.
        out.append([Rung(fmt, levels=int(v)) for v in sorted(cfg.grey_levels)])
    elif fmt in LOSSY:
        out.append([Rung(fmt, quality=int(q)) for q in sorted(cfg.qualities)])
    elif fmt == "png":
        out.append([Rung(fmt, levels=int(v)) for v in (sorted(cfg.grey_levels) if grey else [256])])
    else:
        raise ValueError(f"format {fmt!r} cannot be searched; expected one of {', '.join(EXTENSIONS)}")
    return [lad for lad in out if lad]


def search_formats(formats: Sequence[str], source_format: str) -> list[str]:
    """The output containers of `formats` (a search's `formats` or `native_formats`) for a
    source of `source_format`, `source` resolved, each once."""
    out: list[str] = []
    for f in formats:
        fmt = output_format(CodecConfig(format=f), source_format)
        if fmt not in out:
            out.append(fmt)
    return out


def posterise(arr: np.ndarray, levels: int) -> np.ndarray:
    if levels >= 256:
        return arr
    step = 255.0 / (levels - 1)
    return (np.round(arr.astype(np.float32) / step) * step).round().astype(np.uint8)


def encode(arr: np.ndarray, mode: str, rung: Rung, effort: Effort, icc: bytes | None = None,
           exif: bytes | None = None) -> bytes:
    """uint8 pixels (`mode` L or RGB) -> file bytes at `rung`. Only the metadata given is
    written: the source's ICC profile (people see the same colours) and EXIF when asked.
    A candidate the format cannot hold raises CodecLimit (the caller tries another)."""
    if rung.fmt == "avif" and not features.check("avif"):
        raise CodecLimit("this Pillow build has no AVIF encoder")
    why = limit_reason(rung.fmt, arr.shape[1], arr.shape[0])
    if why:
        raise CodecLimit(why)
    args = effort.args(rung, mode)
    if icc:
        args["icc_profile"] = icc
    if exif:
        args["exif"] = exif
    try:
        return _write(arr, mode, rung, args)
    except (OSError, ValueError) as exc:  # the writer refused this candidate (e.g. libwebp's size checks)
        raise CodecLimit(f"{rung.fmt.upper()} encoder refused {arr.shape[1]}x{arr.shape[0]} {mode}: {exc}") from exc


def _write(arr: np.ndarray, mode: str, rung: Rung, args: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    if rung.levels is not None and rung.levels < 256:
        arr = posterise(arr, rung.levels)
        if rung.fmt == "png" and mode == "L":
            img = Image.fromarray(arr, "L")
            if rung.levels == 2:  # 1-bit PNG
                img.convert("1").save(buf, "PNG", **args)
                return buf.getvalue()
            pal = img.quantize(colors=rung.levels, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            pal.save(buf, "PNG", bits=max(1, int(np.ceil(np.log2(rung.levels)))), **args)
            return buf.getvalue()
    Image.fromarray(arr, mode).save(buf, rung.fmt.upper(), **args)
    return buf.getvalue()


def decode(data: bytes, mode: str) -> np.ndarray:
    """Our own encoder's bytes -> uint8 pixels in `mode`, as the guard re-reads them."""
    return decoded_pixels(data, mode)
