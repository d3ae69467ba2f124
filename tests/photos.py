"""Real photo files for tests (no test functions here): scikit-image's bundled photos
(astronaut, chelsea, coffee, rocket, camera, ... no download needed), cropped and resized with
Pillow, encoded the way cameras, phones and editors write them: progressive and grey JPEGs,
EXIF-rotated JPEGs with a thumbnail, CMYK JPEGs with an embedded CMYK ICC profile, 16-bit
PNG/TIFF, palette PNG, HEIC.

No CMYK ICC profile ships with Pillow or with most systems, so `cmyk_profile()` builds a small
genuine one (ICC v2 output-class profile, CMYK -> XYZ lut16 A2B0 table of the naive CMYK->sRGB
relation): lcms reads it, so a CMYK JPEG carrying it exercises the real colour-managed path.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
GREY = ("camera", "moon", "grass", "gravel", "brick")


@functools.cache
def source(name: str) -> np.ndarray:
    """The uint8 pixels (H,W[,3]) of scikit-image's bundled photo `name`."""
    import skimage.data

    arr = np.asarray(getattr(skimage.data, name)())
    if arr.dtype != np.uint8:
        arr = np.clip(arr * (255.0 / max(arr.max(), 1)), 0, 255).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    return np.ascontiguousarray(arr)


def fit(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop `img` to the aspect of `size` (w, h), then resize it there with LANCZOS."""
    w, h = size
    sw, sh = img.size
    if sw * h > sh * w:  # too wide: crop the sides
        cw, ch = max(1, round(sh * w / h)), sh
    else:
        cw, ch = sw, max(1, round(sw * h / w))
    left, top = (sw - cw) // 2, (sh - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    return img if img.size == (w, h) else img.resize((w, h), Image.LANCZOS)


def photo_image(name: str | Image.Image, size: tuple[int, int]) -> Image.Image:
    """Photo `name` (a scikit-image photo, or a PIL image) cropped and resized to `size` (w, h):
    L or RGB. Every helper below takes either."""
    return fit(name if isinstance(name, Image.Image) else Image.fromarray(source(name)), size)


def encode(img: Image.Image, fmt: str = "JPEG", **save_args) -> bytes:
    if fmt.upper() in ("HEIC", "HEIF"):
        _heif()
        fmt = "HEIF"
    buf = io.BytesIO()
    img.save(buf, fmt, **save_args)
    return buf.getvalue()


def photo(name: str | Image.Image, size: tuple[int, int], fmt: str = "JPEG", **save_args) -> bytes:
    """The file bytes of photo `name` at `size` (w, h), saved by Pillow as `fmt` with `save_args`."""
    return encode(photo_image(name, size), fmt, **save_args)


def _heif() -> None:
    import pillow_heif

    pillow_heif.register_heif_opener()


# --- EXIF -----------------------------------------------------------------------------------

def exif_bytes(orientation: int = 1, thumbnail: bytes | None = None, make: str = "NICE test camera") -> bytes:
    """A camera-like APP1 EXIF payload ("Exif\\0\\0" + little-endian TIFF): IFD0 with Make and
    Orientation, an Exif sub-IFD, and, given `thumbnail` (JPEG bytes), IFD1 carrying it the way
    cameras do (JPEGInterchangeFormat / JPEGInterchangeFormatLength)."""
    make_b = make.encode() + b"\0"
    entries0 = 4
    ifd0_at = 8
    ifd0_len = 2 + 12 * entries0 + 4
    make_at = ifd0_at + ifd0_len
    exif_at = make_at + len(make_b) + (len(make_b) & 1)
    exif_len = 2 + 12 * 1 + 4
    ifd1_at = exif_at + exif_len
    ifd1_len = 2 + 12 * 3 + 4
    thumb_at = ifd1_at + ifd1_len

    def entry(tag: int, typ: int, count: int, value: bytes) -> bytes:
        return struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")

    out = b"II*\0" + struct.pack("<I", ifd0_at)
    out += struct.pack("<H", entries0)
    out += entry(0x010F, 2, len(make_b), struct.pack("<I", make_at))  # Make (ASCII, out of line)
    out += entry(0x0112, 3, 1, struct.pack("<H", orientation))  # Orientation (SHORT)
    out += entry(0x0131, 2, 4, b"NIC\0")  # Software, inline
    out += entry(0x8769, 4, 1, struct.pack("<I", exif_at))  # ExifIFD pointer
    out += struct.pack("<I", ifd1_at if thumbnail else 0)
    out += make_b + (b"\0" if len(make_b) & 1 else b"")
    out += struct.pack("<H", 1) + entry(0xA001, 3, 1, struct.pack("<H", 1)) + struct.pack("<I", 0)  # ColorSpace sRGB
    if thumbnail:
        out += struct.pack("<H", 3)
        out += entry(0x0103, 3, 1, struct.pack("<H", 6))  # Compression: JPEG
        out += entry(0x0201, 4, 1, struct.pack("<I", thumb_at))  # JPEGInterchangeFormat
        out += entry(0x0202, 4, 1, struct.pack("<I", len(thumbnail)))  # ...Length
        out += struct.pack("<I", 0)
        out += thumbnail
    return b"Exif\0\0" + out


def rotated_jpeg(name: str | Image.Image, upright_size: tuple[int, int], orientation: int = 6,
                 thumbnail_size: tuple[int, int] | None = (160, 120), **save_args) -> bytes:
    """A JPEG as a camera held sideways writes it: the pixels are stored rotated and the EXIF
    orientation (6: rotate 90 CW to view, 8: 90 CCW, 3: 180) says how to show them upright, so it
    decodes to `upright_size` (w, h). With a (big) EXIF thumbnail like cameras embed."""
    upright = photo_image(name, upright_size)
    stored = {6: Image.ROTATE_90, 8: Image.ROTATE_270, 3: Image.ROTATE_180}.get(orientation)
    img = upright.transpose(stored) if stored is not None else upright
    thumb = encode(fit(img, thumbnail_size), "JPEG", quality=95) if thumbnail_size else None
    save_args.setdefault("quality", 90)
    return encode(img, "JPEG", exif=exif_bytes(orientation, thumb), **save_args)


# --- CMYK with an ICC profile -------------------------------------------------------------------

_SRGB_TO_XYZ_D50 = np.array([[0.4360747, 0.3850649, 0.1430804],
                             [0.2225045, 0.7168786, 0.0606169],
                             [0.0139322, 0.0971045, 0.7141733]])


def _s15f16(*values: float) -> bytes:
    return b"".join(struct.pack(">i", round(v * 65536)) for v in values)


@functools.cache
def cmyk_profile(grid: int = 9) -> bytes:
    """A valid ICC v2 CMYK printer profile (device CMYK -> PCS XYZ through a lut16 A2B0 CLUT of
    `grid`^4 points), whose colours are the naive CMYK -> sRGB relation R = (1-C)(1-K) ..."""
    axis = np.linspace(0.0, 1.0, grid)
    c, m, y, k = np.meshgrid(axis, axis, axis, axis, indexing="ij")  # first channel varies slowest
    rgb = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=-1).reshape(-1, 3)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _SRGB_TO_XYZ_D50.T
    clut = np.clip(np.round(xyz * 32768.0), 0, 65535).astype(">u2")  # lut16 XYZ: 1.0 = 0x8000
    identity = np.array([0, 65535], dtype=">u2")
    a2b0 = (b"mft2" + b"\0" * 4 + bytes([4, 3, grid, 0]) + _s15f16(1, 0, 0, 0, 1, 0, 0, 0, 1)
            + struct.pack(">HH", 2, 2) + identity.tobytes() * 4 + clut.tobytes() + identity.tobytes() * 3)
    text = b"NICE test CMYK (naive inks)\0"
    desc = (b"desc" + b"\0" * 4 + struct.pack(">I", len(text)) + text
            + struct.pack(">II", 0, 0) + struct.pack(">HB", 0, 0) + b"\0" * 67)
    wtpt = b"XYZ " + b"\0" * 4 + _s15f16(0.9642, 1.0, 0.8249)
    cprt = b"text" + b"\0" * 4 + b"No copyright, test data\0"
    tags = [(b"desc", desc), (b"wtpt", wtpt), (b"cprt", cprt), (b"A2B0", a2b0)]
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for sig, data in tags:
        data += b"\0" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(body), len(data))
        body += data
    size = offset + len(body)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"prtrCMYKXYZ "
              + struct.pack(">6H", 2024, 1, 1, 0, 0, 0) + b"acsp" + b"\0" * 4 + b"\0" * 4
              + b"\0" * 8 + b"\0" * 8 + struct.pack(">I", 0) + _s15f16(0.9642, 1.0, 0.8249)
              + b"\0" * 4 + b"\0" * 16 + b"\0" * 28)
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + body


def cmyk_jpeg(name: str | Image.Image, size: tuple[int, int], icc: bytes | None = None, **save_args) -> bytes:
    """A CMYK JPEG (Adobe, as Photoshop writes print files) of photo `name` carrying a CMYK ICC
    profile (`cmyk_profile()` unless given)."""
    img = photo_image(name, size).convert("RGB").convert("CMYK")
    save_args.setdefault("quality", 90)
    return encode(img, "JPEG", icc_profile=cmyk_profile() if icc is None else icc, **save_args)


@functools.cache
def srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


# --- 16-bit -----------------------------------------------------------------------------------

def _sixteen(name: str | Image.Image, size: tuple[int, int], grey: bool) -> np.ndarray:
    """uint16 pixels of photo `name` using the full 16-bit range (value * 257 + a low-byte ramp)."""
    img = photo_image(name, size)
    img = img.convert("L") if grey else img.convert("RGB")
    arr = np.asarray(img).astype(np.uint16) * 257
    ramp = (np.arange(arr.shape[1], dtype=np.uint16) % 256)[None, :]
    return arr ^ (ramp if grey else ramp[..., None]) & 0x7F


def png16(name: str | Image.Image, size: tuple[int, int], grey: bool = False) -> bytes:
    """A 16-bit PNG (grey: colour type 0, else RGB: colour type 2), as raw converters write."""
    arr = _sixteen(name, size, grey).astype(">u2")
    h, w = arr.shape[:2]
    raw = b"".join(b"\0" + arr[i].tobytes() for i in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 0 if grey else 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def tiff16(name: str | Image.Image, size: tuple[int, int], grey: bool = False) -> bytes:
    """An uncompressed little-endian 16-bit TIFF (grey or RGB), one strip."""
    arr = _sixteen(name, size, grey).astype("<u2")
    h, w = arr.shape[:2]
    spp = 1 if grey else 3
    pixels = arr.tobytes()
    n = 10
    ifd_at = 8
    extra_at = ifd_at + 2 + 12 * n + 4
    bps = struct.pack("<3H", 16, 16, 16) + b"\0\0"
    data_at = extra_at + (len(bps) if spp == 3 else 0)

    def entry(tag: int, typ: int, count: int, value: int) -> bytes:
        packed = struct.pack("<H", value) if typ == 3 else struct.pack("<I", value)
        return struct.pack("<HHI", tag, typ, count) + packed.ljust(4, b"\0")

    ifd = struct.pack("<H", n) + b"".join([
        entry(256, 4, 1, w), entry(257, 4, 1, h),
        entry(258, 3, 1, 16) if spp == 1 else entry(258, 3, 3, extra_at),
        entry(259, 3, 1, 1), entry(262, 3, 1, 1 if grey else 2), entry(273, 4, 1, data_at),
        entry(277, 3, 1, spp), entry(278, 4, 1, h), entry(279, 4, 1, len(pixels)), entry(284, 3, 1, 1),
    ]) + struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", ifd_at) + ifd + (bps if spp == 3 else b"") + pixels


# --- a folder -------------------------------------------------------------------------------

def palette_png(name: str | Image.Image, size: tuple[int, int], colours: int = 64) -> bytes:
    return encode(photo_image(name, size).convert("RGB").quantize(colours), "PNG")


def heic(name: str | Image.Image, size: tuple[int, int], quality: int = 80, **save_args) -> bytes:
    return photo(name, size, "HEIF", quality=quality, **save_args)


def photo_folder(root: str | Path, n: int = 8) -> list[Path]:
    """Write `n` varied small photos (about 300x200 to 800x600) into `root`; returns their paths.
    The first eight cover: a plain JPEG, a portrait EXIF-rotated JPEG (orientation 6), a CMYK
    JPEG with an ICC profile, a 16-bit PNG, a grey JPEG, a palette PNG, a HEIC and a progressive
    JPEG; more are plain JPEGs of several sizes and aspects."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    kinds = [
        ("plain.jpg", lambda: photo("astronaut", (640, 480), quality=90)),
        ("rotated6.jpg", lambda: rotated_jpeg("chelsea", (300, 400), orientation=6)),
        ("cmyk_icc.jpg", lambda: cmyk_jpeg("coffee", (400, 300))),
        ("sixteen.png", lambda: png16("rocket", (320, 240))),
        ("grey.jpg", lambda: photo("camera", (400, 400), quality=85)),
        ("palette.png", lambda: palette_png("chelsea", (300, 200))),
        ("photo.heic", lambda: heic("astronaut", (400, 300))),
        ("progressive.jpg", lambda: photo("coffee", (800, 600), quality=85, progressive=True)),
    ]
    sizes = [(320, 240), (480, 640), (800, 600), (500, 333), (300, 200), (600, 800)]
    paths = []
    for i in range(n):
        if i < len(kinds):
            fname, make = kinds[i]
            data = make()
        else:
            j = i - len(kinds)
            fname = f"extra_{j:02d}.jpg"
            data = photo(COLOUR[j % 4], sizes[j % len(sizes)], quality=80 + j % 15)
        path = root / fname
        path.write_bytes(data)
        paths.append(path)
    return paths
