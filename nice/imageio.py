"""Decoding untrusted image bytes into a normalised PIL image, with reasons for rejections.

Every decode applies EXIF orientation and normalises the mode to `L` (greyscale) or `RGB`:
16-bit and float greyscale are scaled to 8 bits, palettes expanded, alpha composited on
white, CMYK/YCbCr/LAB converted; a palette whose colours are all grey, and an RGB image
with R = G = B (WebP has no grey mode), decode to `L`.
Each DecodedImage also carries what an output needs to look like its source: `icc`, the ICC
profile to embed (the source's own for L/RGB sources; sRGB after a CMYK source was converted
through its profile), and `exif`, the source's EXIF re-serialised with orientation 1 and
without the thumbnail (IFD1).
Rejections carry a status: `skipped` for inputs we choose not to process (too large, wrong
shape for the model), `failed` for inputs that are broken.

The bytes are untrusted (hostile-input corpus: tests/data/hostile/). Only the raster formats
in ACCEPTED_FORMATS are opened, so no Pillow plugin that hands data to an external program
(EPS -> Ghostscript) is ever reached, and any exception a decoder raises becomes a `failed`
rejection rather than escaping into the job.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch
import torchvision.io as tvio
from PIL import Image, ImageOps, UnidentifiedImageError

# Pillow format names tried by Image.open (JPEG covers MPO; HEIF is pillow-heif's HEIC/HEIF
# plugin); anything else is "not an image".
ACCEPTED_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "AVIF", "HEIF", "TIFF", "BMP", "DIB", "PPM", "TGA", "ICO",
                    "JPEG2000", "QOI", "PCX", "SGI")


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """ACCEPTED_FORMATS that this Pillow build can open (AVIF and JPEG 2000 are optional; HEIF
    needs the pillow-heif package, registered here once: without it HEIC is not accepted)."""
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
    except Exception:  # noqa: BLE001 - missing or broken pillow-heif: HEIC files are "not an image"
        pass
    Image.init()
    return tuple(f for f in ACCEPTED_FORMATS if f in Image.OPEN)

GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F", "La"}


class ImageRejected(Exception):
    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class DecodedImage:
    """A decoded source, mode L or RGB, orientation applied: a PIL image, or after a native
    decode a uint8 array (H,W[,3]) whose PIL image is built only if someone asks for it."""

    def __init__(self, image: Image.Image | None, format: str, mode_in: str, array: np.ndarray | None = None,
                 *, icc: bytes | None = None, exif: bytes | None = None) -> None:
        if image is None and array is None:
            raise ValueError("a decoded image needs pixels")
        self._image = image
        self.array = array  # None unless it holds exactly the pixels of `image`
        self.format = format  # PIL format name of the source (JPEG, PNG, HEIF, ...)
        self.mode_in = mode_in
        # The ICC profile an output should embed to show the source's colours: the source's own
        # bytes when they describe the decoded pixels, the sRGB profile after a CMYK source was
        # converted through its profile, None when there is none (plain sRGB is assumed).
        self.icc = icc
        # The source's EXIF for an output (Pillow's `save(..., exif=...)`: "Exif\0\0" + TIFF):
        # orientation 1 (the pixels are upright) and no thumbnail (IFD1). None without EXIF.
        self.exif = exif

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image = Image.fromarray(self.array)
        return self._image

    @image.setter
    def image(self, img: Image.Image) -> None:
        self._image, self.array = img, None

    @property
    def mode(self) -> str:
        if self.array is not None:
            return "L" if self.array.ndim == 2 else "RGB"
        return self.image.mode

    @property
    def size(self) -> tuple[int, int]:
        if self.array is not None:
            return (self.array.shape[1], self.array.shape[0])
        return self.image.size

    def pixels(self) -> np.ndarray:
        """uint8 (H,W) or (H,W,3), without a copy where the decode produced an array."""
        return self.array if self.array is not None else np.asarray(self.image)


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
        grey = _grey_palette(img)
        img = _normalise_mode(img.convert("RGBA") if "transparency" in img.info else img.convert("RGB"))
        return img.convert("L") if grey else img  # exact: R = G = B, also after compositing on white
    if mode in ("LA", "La", "RGBA", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out = Image.alpha_composite(base, rgba)
        return out.convert("L" if mode in ("LA", "La") else "RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGBX


def _grey_palette(img: Image.Image) -> bool:
    """Whether every palette entry the image uses is a grey (R = G = B)."""
    palette = img.getpalette("RGB") or []
    used = [index for _, index in img.getcolors(256) or []]
    return bool(used) and all(3 * i + 2 < len(palette) and palette[3 * i] == palette[3 * i + 1] == palette[3 * i + 2]
                              for i in used)


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode one image file's bytes (first frame of animations) or raise ImageRejected."""
    if not data:
        raise ImageRejected("failed", "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=_open_formats())
            fmt = img.format or "UNKNOWN"
            w, h = img.size
            if w * h > max_pixels:
                raise ImageRejected("skipped", f"{w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
            mode_in = img.mode
            source_exif = img.getexif()
            upright = source_exif.get(0x0112, 1) == 1
            exif = _output_exif(source_exif)
            icc = img.info.get("icc_profile") or None  # parsed with the header, before any pixels
            pixels = (_native_pixels(data, mode_in)
                      if upright and fmt in ("JPEG", "WEBP") and mode_in in ("L", "RGB")
                      and not getattr(img, "is_animated", False) else None)
            if pixels is not None:  # the common case, without Pillow's Python-side decoding
                if pixels.ndim == 3 and _neutral_array(pixels):
                    pixels = np.ascontiguousarray(pixels[..., 0])  # see below: grey stays grey
                return DecodedImage(None, fmt, mode_in, array=pixels, icc=icc, exif=exif)
            # Anything else, and whatever the native decoders refuse (Pillow names the fault).
            img.load()
            icc = img.info.get("icc_profile") or icc  # (a plugin may add it while loading)
            img = img if upright else ImageOps.exif_transpose(img)
            if icc is not None and img.mode not in ("L", "RGB"):
                img, icc = _through_profile(img, icc)
            img = _normalise_mode(img)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageRejected("skipped", f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError:
        raise ImageRejected("failed", "not an image (format not recognised or not accepted)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageRejected("failed", f"corrupt or truncated image: {str(exc).strip()}") from exc
    except Exception as exc:  # noqa: BLE001 - a decoder choking on hostile bytes fails this file only
        raise ImageRejected("failed", f"undecodable image ({type(exc).__name__}: {exc})") from exc
    if img.mode == "RGB" and _neutral(img):
        # WebP has no grey mode: a grey image (NICE's own WebP outputs included) decodes as RGB
        # with R = G = B. It is grey, so it is classified and stored as grey.
        img = img.convert("L")
    return DecodedImage(img, fmt, mode_in, icc=icc, exif=exif)


# Tags of a TIFF source's IFD0 that describe its own raster (strips, samples, compression) or
# are carried separately (34675: its ICC profile): meaningless, or wrong, in an output's EXIF.
_RASTER_TAGS = (254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317,
                320, 322, 323, 324, 325, 338, 339, 340, 341, 513, 514, 530, 531, 34675)


def _output_exif(exif: Image.Exif) -> bytes | None:
    """The source's EXIF re-serialised for an output: IFD0 with its Exif and GPS sub-IFDs,
    orientation 1 (the decoded pixels are upright), no thumbnail (IFD1, which Pillow never
    writes back) and no raster-structure tags. None without EXIF, or when it cannot be
    re-serialised (hostile EXIF costs the metadata, not the image)."""
    if not len(exif):
        return None
    try:
        out = Image.Exif()
        out.load(exif.tobytes())  # a copy: the source image's own Exif is left as it is
        for tag in _RASTER_TAGS:
            out.pop(tag, None)
        if 0x0112 in out:
            out[0x0112] = 1
        return out.tobytes() if len(out) else None
    except Exception:  # noqa: BLE001
        return None


@functools.cache
def _srgb_profile():
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.cache
def srgb_icc() -> bytes:
    """The sRGB ICC profile bytes, which `DecodedImage.icc` holds after a CMS conversion. lcms
    stamps a creation time into the header (bytes 24-35); it is zeroed so that the same source
    gives the same output bytes in every run (idempotent re-runs, stable ETags)."""
    data = bytearray(_srgb_profile().tobytes())
    data[24:36] = bytes(12)
    return bytes(data)


def _through_profile(img: Image.Image, icc: bytes) -> tuple[Image.Image, bytes | None]:
    """A source in another mode than L/RGB that carries an ICC profile. When the profile
    describes the pixels the mode normalisation produces (an RGB profile on RGBA/P/YCbCr, a grey
    one on LA/16-bit grey), it stays: (img, icc). Otherwise (CMYK, YCCK -> CMYK, LAB) the pixels
    are converted through it to sRGB with lcms and the output carries the sRGB profile, since
    the source's CMYK profile would be wrong on RGB pixels. If the profile cannot be read or the
    conversion fails: (img, None), and the naive conversion of _normalise_mode follows."""
    try:
        from PIL import ImageCms

        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        space = profile.profile.xcolor_space.strip()
        if space == ("GRAY" if img.mode in GREY_MODES else "RGB") and img.mode != "CMYK":
            return img, icc
        out = ImageCms.profileToProfile(img, profile, _srgb_profile(), outputMode="RGB")
    except Exception:  # noqa: BLE001 - a broken or mismatched profile costs the colour management only
        return img, None
    if out is None or out.mode != "RGB":
        return img, None
    return out, srgb_icc()


def _neutral(img: Image.Image) -> bool:
    """Whether an RGB image is grey (R = G = B everywhere). A sparse sample first, so colour
    photos (nearly every RGB image) are told apart without comparing every pixel."""
    return _neutral_array(np.asarray(img))


def _neutral_array(arr: np.ndarray) -> bool:
    for a in (arr[::16, ::16], arr):
        if not ((a[..., 0] == a[..., 1]).all() and (a[..., 1] == a[..., 2]).all()):
            return False
    return True


def to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """PIL (L or RGB) or uint8 pixels (H,W[,3]) -> float tensor (C,H,W) in [0,1]."""
    arr = np.asarray(img, dtype=np.uint8)
    t = torch.from_numpy(arr.copy())
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
    return t.float().div_(255.0)


def image_pixels(img: Image.Image, mode: str) -> np.ndarray:
    """A decoded PIL image -> uint8 pixels (H,W) or (H,W,3) in `mode` (L or RGB), writable."""
    return np.array(img if img.mode == mode else img.convert(mode))


def _native_pixels(data: bytes, mode: str) -> np.ndarray | None:
    """libjpeg-turbo / libwebp through torchvision: the same libraries as Pillow without its
    Python marker parsing, ~2x faster (tests/test_imageio_fast.py checks the pixels are
    identical). None when the file's own channels are not `mode` (a conversion would differ
    from Pillow's) or the decoder refuses it."""
    if data[:3] == b"\xff\xd8\xff":
        decode = tvio.decode_jpeg
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        decode = tvio.decode_webp
    else:
        return None
    try:
        t = decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=tvio.ImageReadMode.UNCHANGED)
    except (RuntimeError, ValueError):
        return None
    if mode == "RGB" and t.shape[0] == 3:
        return t.permute(1, 2, 0).contiguous().numpy()
    if mode == "L" and t.shape[0] == 1:
        return t[0].numpy()
    if mode == "L" and t.shape[0] == 3 and _neutral_array(t.permute(1, 2, 0).numpy()):
        return t[0].numpy()  # Pillow's L of a neutral pixel is that pixel's value
    return None


def decoded_pixels(data: bytes, mode: str) -> np.ndarray:
    """Our own encoder's bytes -> uint8 pixels in `mode` (L or RGB), for re-classification."""
    fast = _native_pixels(data, mode)
    if fast is not None:
        return fast
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img if img.mode == mode else img.convert(mode))


def to_float_batch(pixels: np.ndarray) -> torch.Tensor:
    """(N,H,W) or (N,H,W,3) uint8 -> (N,C,H,W) float in [0,1], in one conversion per batch."""
    # A decoded image's array is read-only; the float conversion copies anyway.
    t = torch.from_numpy(pixels if pixels.flags.writeable else pixels.copy())
    t = t.unsqueeze(1) if t.ndim == 3 else t.permute(0, 3, 1, 2)
    return t.float().div_(255.0)


def to_uint8_batch(x: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) floats in [0,1] -> (N,H,W) or (N,H,W,3) uint8, rounding to the nearest level."""
    arr = (x.clamp(0, 1) * 255.0).round_().to(torch.uint8)
    return arr[:, 0].numpy() if arr.shape[1] == 1 else arr.permute(0, 2, 3, 1).contiguous().numpy()
