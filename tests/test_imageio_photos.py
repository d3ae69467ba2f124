"""decode_image on real photo files as cameras, phones and editors write them (tests/photos.py):
orientation, modes, HEIC, the ICC profile and EXIF an output carries, and no exception escaping."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageCms

from nice.imageio import DecodedImage, ImageRejected, decode_image, srgb_icc

import photos

pytest.importorskip("pillow_heif")


def _decode(data: bytes) -> DecodedImage:
    return decode_image(data)


def _close(a: np.ndarray, b: np.ndarray, tol: float = 12.0) -> bool:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < tol


# --- every kind decodes, upright, to L or RGB ------------------------------------------------

KINDS = {
    "progressive jpeg": (lambda: photos.photo("coffee", (400, 300), quality=85, progressive=True), "JPEG", "RGB", (400, 300)),
    "cmyk jpeg + icc": (lambda: photos.cmyk_jpeg("coffee", (320, 240)), "JPEG", "RGB", (320, 240)),
    "grey jpeg": (lambda: photos.photo("camera", (300, 300), quality=85), "JPEG", "L", (300, 300)),
    "16-bit grey png": (lambda: photos.png16("camera", (200, 150), grey=True), "PNG", "L", (200, 150)),
    "16-bit rgb png": (lambda: photos.png16("rocket", (200, 150)), "PNG", "RGB", (200, 150)),
    "16-bit grey tiff": (lambda: photos.tiff16("camera", (200, 150), grey=True), "TIFF", "L", (200, 150)),
    "16-bit rgb tiff": (lambda: photos.tiff16("rocket", (200, 150)), "TIFF", "RGB", (200, 150)),
    "palette png": (lambda: photos.palette_png("chelsea", (300, 200)), "PNG", "RGB", (300, 200)),
    "heic": (lambda: photos.heic("astronaut", (320, 240)), "HEIF", "RGB", (320, 240)),
    "exif 6 jpeg": (lambda: photos.rotated_jpeg("chelsea", (240, 320), orientation=6), "JPEG", "RGB", (240, 320)),
    "exif 8 jpeg": (lambda: photos.rotated_jpeg("astronaut", (320, 240), orientation=8), "JPEG", "RGB", (320, 240)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_photo_kinds_decode(kind):
    make, fmt, mode, size = KINDS[kind]
    dec = _decode(make())
    assert (dec.format, dec.mode, dec.size) == (fmt, mode, size)
    px = dec.pixels()
    assert px.dtype == np.uint8 and px.shape[:2] == (size[1], size[0])
    assert px.ndim == (2 if mode == "L" else 3)


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_is_upright(orientation):
    upright = np.asarray(photos.photo_image("chelsea", (240, 320)))
    dec = _decode(photos.rotated_jpeg("chelsea", (240, 320), orientation=orientation, quality=95))
    assert dec.size == (240, 320)  # stored 320x240, shown portrait
    assert _close(dec.pixels(), upright, 4.0)
    wrong_way = np.asarray(Image.fromarray(upright).transpose(Image.ROTATE_180))
    assert not _close(dec.pixels(), wrong_way, 4.0)


def test_sixteen_bit_keeps_its_image():
    ref = np.asarray(photos.photo_image("rocket", (200, 150)).convert("L"))
    for data in (photos.png16("rocket", (200, 150), grey=True), photos.tiff16("rocket", (200, 150), grey=True)):
        assert _close(_decode(data).pixels(), ref, 1.5)
    ref_rgb = np.asarray(photos.photo_image("rocket", (200, 150)))
    for data in (photos.png16("rocket", (200, 150)), photos.tiff16("rocket", (200, 150))):
        dec = _decode(data)
        assert dec.mode_in == "RGB"  # Pillow 13 opens 16-bit RGB as 8-bit RGB (the high bytes)
        assert _close(dec.pixels(), ref_rgb, 1.5)


def test_heic_decodes_like_the_photo():
    ref = np.asarray(photos.photo_image("astronaut", (320, 240)))
    dec = _decode(photos.heic("astronaut", (320, 240), quality=90))
    assert dec.format == "HEIF" and dec.mode == "RGB"
    assert _close(dec.pixels(), ref, 8.0)


def test_heic_orientation_is_applied():
    upright = photos.photo_image("chelsea", (200, 300))
    stored = upright.transpose(Image.ROTATE_90)
    data = photos.encode(stored, "HEIF", quality=90, exif=photos.exif_bytes(6))
    dec = _decode(data)
    assert dec.size == (200, 300)
    assert _close(dec.pixels(), np.asarray(upright), 8.0)
    if dec.exif is not None:
        exif = Image.Exif()
        exif.load(dec.exif)
        assert exif.get(0x0112, 1) == 1


# --- ICC ------------------------------------------------------------------------------------

def test_rgb_source_keeps_its_own_profile():
    icc = photos.srgb_profile() + b""  # any RGB profile: its bytes must come back unchanged
    for fmt, args in (("JPEG", {"quality": 90}), ("WEBP", {"quality": 80}), ("PNG", {})):
        data = photos.photo("coffee", (160, 120), fmt, icc_profile=icc, **args)
        dec = _decode(data)
        assert dec.mode == "RGB" and dec.icc == icc, fmt
    grey = _decode(photos.photo("camera", (160, 120), "JPEG", icc_profile=icc))
    assert grey.mode == "L" and grey.icc == icc


def test_fast_path_carries_icc_and_exif():
    data = photos.photo("coffee", (160, 120), "JPEG", quality=90, icc_profile=photos.srgb_profile(),
                        exif=photos.exif_bytes(1, photos.photo("coffee", (64, 48))))
    dec = _decode(data)
    assert dec.array is not None, "an upright RGB JPEG takes the native decode"
    assert dec.icc == photos.srgb_profile()
    assert dec.exif is not None
    exif = Image.Exif()
    exif.load(dec.exif)
    assert exif.get(0x010F) == "NICE test camera" and exif.get(0x0112) == 1


def test_no_profile_no_icc():
    assert _decode(photos.photo("coffee", (160, 120))).icc is None
    assert _decode(photos.png16("rocket", (64, 48))).icc is None


def test_cmyk_profile_is_a_real_cmyk_profile():
    prof = ImageCms.ImageCmsProfile(io.BytesIO(photos.cmyk_profile()))
    assert prof.profile.xcolor_space.strip() == "CMYK"


def test_cmyk_with_icc_converts_to_srgb():
    dec = _decode(photos.cmyk_jpeg("coffee", (320, 240), quality=95))
    assert dec.mode_in == "CMYK" and dec.mode == "RGB"
    assert dec.icc == srgb_icc()
    assert ImageCms.ImageCmsProfile(io.BytesIO(dec.icc)).profile.xcolor_space.strip() == "RGB"
    assert _close(dec.pixels(), np.asarray(photos.photo_image("coffee", (320, 240))), 6.0)


def test_cmyk_red_patch_decodes_red():
    red = Image.new("RGB", (64, 64), (220, 30, 30)).convert("CMYK")
    for icc in (photos.cmyk_profile(), None):
        buf = io.BytesIO()
        red.save(buf, "JPEG", quality=95, **({"icc_profile": icc} if icc else {}))
        dec = _decode(buf.getvalue())
        r, g, b = dec.pixels().reshape(-1, 3).mean(axis=0)
        assert r > 180 and g < 70 and b < 70, (icc is not None, r, g, b)
        assert dec.icc == (srgb_icc() if icc else None)


def test_cmyk_with_a_mismatched_profile_falls_back():
    # an RGB profile on CMYK pixels: lcms refuses, the naive conversion decodes it, no profile
    dec = _decode(photos.cmyk_jpeg("coffee", (160, 120), icc=photos.srgb_profile()))
    assert dec.mode == "RGB" and dec.icc is None
    dec = _decode(photos.cmyk_jpeg("coffee", (160, 120), icc=b"not a profile at all" * 10))
    assert dec.mode == "RGB" and dec.icc is None


# --- EXIF -----------------------------------------------------------------------------------

def _app1_length(jpeg: bytes) -> int:
    """The length of the first APP1 (EXIF) segment of a JPEG, 0 without one."""
    i = 2
    while i + 4 <= len(jpeg) and jpeg[i] == 0xFF:
        marker, length = jpeg[i + 1], struct.unpack(">H", jpeg[i + 2:i + 4])[0]
        if marker == 0xE1:
            return length
        if marker == 0xDA:
            break
        i += 2 + length
    return 0


def test_exif_has_no_thumbnail_and_orientation_one():
    data = photos.rotated_jpeg("chelsea", (300, 400), orientation=6, thumbnail_size=(320, 240))
    src = Image.open(io.BytesIO(data)).getexif()
    assert src.get(0x0112) == 6 and src.get_ifd(ExifTags.IFD.IFD1), "the source has a thumbnail"
    assert _app1_length(data) > 15_000
    dec = _decode(data)
    assert dec.exif is not None and dec.exif.startswith(b"Exif\0\0")
    out = photos.encode(dec.image, "JPEG", quality=85, exif=dec.exif)
    back = Image.open(io.BytesIO(out))
    exif = back.getexif()
    assert exif.get(0x0112) == 1
    assert not exif.get_ifd(ExifTags.IFD.IFD1)
    assert exif.get(0x010F) == "NICE test camera"  # the rest of the metadata is kept
    assert exif.get_ifd(ExifTags.IFD.Exif).get(0xA001) == 1
    assert 0 < _app1_length(out) < 1_000
    assert back.size == (300, 400)  # a viewer honouring orientation shows it as decoded


def test_no_exif_is_none():
    assert _decode(photos.photo("coffee", (160, 120))).exif is None
    assert _decode(photos.png16("rocket", (64, 48))).exif is None
    assert _decode(photos.tiff16("rocket", (64, 48))).exif is None  # raster tags only: no metadata


def test_constructor_stays_backwards_compatible():
    dec = DecodedImage(Image.new("L", (4, 4)), "PNG", "L")
    assert dec.icc is None and dec.exif is None
    dec = DecodedImage(None, "JPEG", "RGB", np.zeros((2, 3, 3), np.uint8), icc=b"x", exif=b"y")
    assert (dec.icc, dec.exif, dec.size) == (b"x", b"y", (3, 2))


# --- no exception escapes ---------------------------------------------------------------------

TRUNCATED = {
    "heic, header only": lambda: photos.heic("astronaut", (320, 240))[:600],
    "heic, half": lambda: (lambda d: d[: len(d) // 2])(photos.heic("astronaut", (320, 240))),
    "cmyk, inside the profile": lambda: photos.cmyk_jpeg("coffee", (320, 240))[:20_000],
    "cmyk, half the scan": lambda: (lambda d: d[: len(d) - (len(d) - 40_000) // 2])(photos.cmyk_jpeg("coffee", (320, 240))),
}


@pytest.mark.parametrize("kind", list(TRUNCATED))
def test_truncated_sources_fail_with_a_reason(kind):
    with pytest.raises(ImageRejected) as err:
        _decode(TRUNCATED[kind]())
    assert err.value.status == "failed" and err.value.reason


def test_photo_folder_decodes(tmp_path):
    paths = photos.photo_folder(tmp_path, n=10)
    assert len(paths) == 10
    formats = set()
    for path in paths:
        dec = _decode(path.read_bytes())
        assert dec.mode in ("L", "RGB") and 300 <= max(dec.size) <= 800
        formats.add(dec.format)
    assert formats == {"JPEG", "PNG", "HEIF"}
