"""The guard re-classifies what a user will decode: the fast decoder must give Pillow's pixels."""

import io

import numpy as np
import pytest
from PIL import Image

from nice.imageio import _native_pixels, decoded_pixels


def _photo(h: int, w: int, grey: bool = False) -> Image.Image:
    import skimage.data

    arr = skimage.data.astronaut()[100:100 + h, 150:150 + w]
    img = Image.fromarray(arr)
    return img.convert("L") if grey else img


def _pil_pixels(data: bytes, mode: str) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    img.load()
    return np.asarray(img if img.mode == mode else img.convert(mode))


CASES = [
    ("JPEG", {"quality": 85, "optimize": True, "subsampling": "4:2:0"}, False),
    ("JPEG", {"quality": 20, "subsampling": "4:4:4"}, False),
    ("JPEG", {"quality": 60, "progressive": True}, False),
    ("JPEG", {"quality": 70}, True),
    ("WEBP", {"quality": 3, "method": 0}, False),
    ("WEBP", {"quality": 80, "method": 4}, False),
    ("WEBP", {"lossless": True, "quality": 100, "method": 6}, False),
    ("WEBP", {"lossless": True, "quality": 50, "method": 2}, True),  # grey stored as neutral RGB
]


@pytest.mark.parametrize("size", [(64, 64), (37, 101), (224, 224)])
@pytest.mark.parametrize("fmt,params,grey", CASES)
def test_fast_decode_gives_pillows_pixels(fmt, params, grey, size):
    buf = io.BytesIO()
    _photo(*size, grey=grey).save(buf, fmt, **params)
    data = buf.getvalue()
    mode = "L" if grey else "RGB"
    fast = _native_pixels(data, mode)
    assert fast is not None, "the fast path should take our own JPEG/WebP outputs"
    assert fast.dtype == np.uint8 and fast.shape == _pil_pixels(data, mode).shape
    assert np.array_equal(fast, _pil_pixels(data, mode))
    assert np.array_equal(decoded_pixels(data, mode), _pil_pixels(data, mode))


def test_fast_decode_declines_what_it_would_convert_differently():
    rgb = io.BytesIO()
    _photo(32, 32).save(rgb, "JPEG", quality=80)
    # a colour JPEG read as grey: Pillow's RGB->L differs from libjpeg's own luma, so Pillow decodes it
    assert _native_pixels(rgb.getvalue(), "L") is None
    assert np.array_equal(decoded_pixels(rgb.getvalue(), "L"), _pil_pixels(rgb.getvalue(), "L"))
    cmyk = io.BytesIO()
    _photo(32, 32).convert("CMYK").save(cmyk, "JPEG")
    assert _native_pixels(cmyk.getvalue(), "RGB") is None
    png = io.BytesIO()
    _photo(32, 32).save(png, "PNG")
    assert _native_pixels(png.getvalue(), "RGB") is None
    assert _native_pixels(b"\xff\xd8\xff\xe0 truncated", "RGB") is None


@pytest.mark.parametrize("fmt,params,grey", CASES + [("JPEG", {"quality": 95, "subsampling": "4:2:2"}, False)])
def test_decode_image_gives_pillows_pixels_for_sources(fmt, params, grey):
    """Sources take the same fast path when upright JPEG/WebP: the classifier must see what
    Pillow decodes (exif-rotated, animated, odd-mode and broken files stay on Pillow)."""
    from nice.imageio import decode_image

    buf = io.BytesIO()
    _photo(48, 80, grey=grey).save(buf, fmt, **params)
    dec = decode_image(buf.getvalue())
    mode = "L" if grey else "RGB"
    assert dec.image.mode == mode and dec.format == fmt and dec.mode_in in ("L", "RGB")
    assert np.array_equal(np.asarray(dec.image), _pil_pixels(buf.getvalue(), mode))
