#!/usr/bin/env python3
"""Write the hostile-input corpus to tests/data/hostile/ (deterministic: numpy + Pillow, seeded).

    .venv/bin/python scripts/make_hostile_corpus.py [--out tests/data/hostile] [--check]

Every case is one file plus a row in `manifest.json`: the file, the key it is uploaded under
(relative to the archive root; several cases are about keys, not bytes), what it is, and
the expected outcome of an archive run with the test suite's small greyscale 28x28 model:
  expect        {"status": [acceptable statuses], "reason": substring of the row's error or null}
  expect_local  the same for runs whose DST is a local folder, where it differs
  local_src     whether the key can exist as a path in a local source folder at all
Statuses are the savings table's: compressed | kept_original | skipped | failed.
`compressed` and `kept_original` are both acceptable wherever the model's guard decides.

Huge images are header tricks or highly compressible streams, never real pixels: the corpus
stays under 1 MB. `--check` regenerates in memory and fails if the files on disk differ.

How the YCCK JPEG is made (Pillow cannot write YCCK): the Y, Cb, Cr of an RGB picture plus a
K plane are written as a 4-channel "CMYK" JPEG with no colour conversion (Pillow stores CMYK
inverted, Adobe style, so the planes are inverted first), then the Adobe APP14 marker's
transform byte is patched from 0 (none) to 2 (YCCK). Decoders then see a genuine YCCK file
and convert YCC -> RGB -> inverted CMYK, as they do for Photoshop's YCCK output.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SEED = 20240609
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "data" / "hostile"

OK = ["compressed", "kept_original"]  # the model's guard decides between the two


# -- pictures -------------------------------------------------------------------------------
def digit(rng: np.random.Generator) -> np.ndarray:
    """An MNIST-like 28x28 "7": white strokes on black, a little seeded noise."""
    img = Image.new("L", (28, 28), 0)
    d = ImageDraw.Draw(img)
    d.line([(7, 7), (21, 7), (13, 23)], fill=255, width=3)
    arr = np.asarray(img, dtype=np.int16) + rng.integers(-6, 7, (28, 28))
    return np.clip(arr, 0, 255).astype(np.uint8)


def upright(rng: np.random.Generator) -> np.ndarray:
    """A 40 wide x 24 high picture of 8x8 blocks, asymmetric so every flip/rotation shows."""
    blocks = rng.choice(np.array([16, 240], np.uint8), size=(3, 5))
    blocks[0, 0], blocks[0, 4], blocks[2, 0], blocks[2, 4] = 240, 16, 16, 16
    return np.kron(blocks, np.ones((8, 8), np.uint8))


# -- encoders -------------------------------------------------------------------------------
def save(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_raw(width: int, height: int, idat: bytes, bit_depth: int = 8, colour: int = 0,
            extra: bytes = b"") -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat)
            + png_chunk(b"IEND", b""))


def zeros_stream(total: int, row: int | None = None) -> bytes:
    """zlib of `total` zero bytes, compressed piecewise (never held whole in memory)."""
    z = zlib.compressobj(9)
    piece = b"\x00" * (row or 1 << 20)
    out, left = [], total
    while left > 0:
        n = min(left, len(piece))
        out.append(z.compress(piece[:n]))
        left -= n
    out.append(z.flush())
    return b"".join(out)


def marker_offset(data: bytes, marker: int) -> int:
    """Offset of the first JPEG marker 0xFF<marker> in the header segments."""
    i = 2
    while i < len(data) - 4:
        if data[i] != 0xFF:
            raise ValueError("lost JPEG marker sync")
        m = data[i + 1]
        if m == marker:
            return i
        i += 2 + struct.unpack(">H", data[i + 2:i + 4])[0]
    raise ValueError(f"no marker {marker:#x}")


def corrupt_scan(jpeg: bytes, rng: np.random.Generator) -> bytes:
    """Garbage (no 0xFF, so no fake markers) over the middle third of the entropy-coded data."""
    sos = marker_offset(jpeg, 0xDA)
    start = sos + 2 + struct.unpack(">H", jpeg[sos + 2:sos + 4])[0]
    end = len(jpeg) - 2  # EOI
    a, b = start + (end - start) // 3, start + 2 * (end - start) // 3
    junk = rng.integers(0, 0xFF, b - a, dtype=np.uint8).tobytes()
    return jpeg[:a] + junk + jpeg[b:]


def corrupt_huffman(jpeg: bytes) -> bytes:
    """A DHT segment whose code counts claim more codes than the table can hold."""
    dht = marker_offset(jpeg, 0xC4)
    counts = dht + 5  # FF C4, length(2), class/id(1), then 16 counts
    return jpeg[:counts] + b"\xff" * 16 + jpeg[counts + 16:]


def ycck_jpeg(rng: np.random.Generator) -> bytes:
    rgb = np.zeros((28, 28, 3), np.uint8)
    rgb[..., 0] = np.linspace(0, 255, 28, dtype=np.uint8)[None, :]
    rgb[..., 1] = np.linspace(255, 0, 28, dtype=np.uint8)[:, None]
    rgb[..., 2] = 96
    ycc = np.asarray(Image.fromarray(rgb).convert("YCbCr"))
    k = np.full((28, 28, 1), 32, np.uint8)
    stored = np.concatenate([ycc, k], axis=2)
    data = save(Image.fromarray(255 - stored, "CMYK"), "JPEG", quality=95)
    app14 = marker_offset(data, 0xEE)
    if data[app14 + 4:app14 + 9] != b"Adobe":
        raise ValueError("no Adobe APP14 segment in the CMYK JPEG")
    transform = app14 + 15  # FF EE, len(2), "Adobe"(5), version(2), flags0(2), flags1(2)
    if data[transform] != 0:
        raise ValueError(f"unexpected Adobe transform {data[transform]}")
    return data[:transform] + b"\x02" + data[transform + 1:]


# Inverse of what ImageOps.exif_transpose applies for each orientation value.
ORIENT_INVERSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                  4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                  6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
                  8: Image.Transpose.ROTATE_270}


def exif_jpeg(picture: np.ndarray, orientation: int) -> bytes:
    """A camera-style JPEG: pixels stored un-rotated, the EXIF tag says how to display them."""
    stored = Image.fromarray(picture, "L")
    if orientation in ORIENT_INVERSE:
        stored = stored.transpose(ORIENT_INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    return save(stored, "JPEG", quality=95, exif=exif.tobytes())


# -- the corpus ------------------------------------------------------------------------------
def build() -> tuple[dict[str, bytes], list[dict]]:
    rng = np.random.default_rng(SEED)
    files: dict[str, bytes] = {}
    cases: list[dict] = []
    # File stems are unique, so no two outputs can share a name when the output format
    # changes the extension (that collision is a known issue: tests/test_hostile.py).

    def add(case: str, file: str, data: bytes | None, what: str, status: list[str], reason: str | None = None,
            key: str | None = None, local_src: bool = True, local: tuple[list[str], str | None] | None = None,
            **extra) -> None:
        if data is not None:
            files[file] = data
        row = {"case": case, "file": file, "key": key if key is not None else f"bytes/{file}", "what": what,
               "expect": {"status": status, "reason": reason}, "local_src": local_src}
        if local is not None:
            row["expect_local"] = {"status": local[0], "reason": local[1]}
        row.update(extra)
        cases.append(row)

    pic = digit(rng)
    digit_png = save(Image.fromarray(pic, "L"), "PNG")
    digit_jpg = save(Image.fromarray(pic, "L"), "JPEG", quality=90)
    add("control", "digit.png", digit_png, "a clean 28x28 greyscale digit (control)", OK)

    # Broken bytes.
    add("truncated_jpeg", "truncated_jpeg.jpg", digit_jpg[: len(digit_jpg) * 6 // 10],
        "JPEG cut at 60% of its bytes", ["failed"], "truncated")
    add("truncated_png", "truncated_png.png", digit_png[: len(digit_png) // 2],
        "PNG cut in half (inside IDAT)", ["failed"], "truncated")
    add("corrupt_jpeg_scan", "corrupt_scan.jpg", corrupt_scan(digit_jpg, rng),
        "JPEG with random bytes over a third of the scan data (headers intact); libjpeg only "
        "warns, so it may decode to damaged pixels", OK + ["failed"])
    add("corrupt_jpeg_header", "corrupt_huffman.jpg", corrupt_huffman(digit_jpg),
        "JPEG whose Huffman table (DHT) is bogus", ["failed"], "corrupt")
    add("zero_bytes", "empty.jpg", b"", "zero-byte file", ["failed"], "empty file")
    add("text_as_jpeg", "notes.jpg", b"These are my notes, not a JPEG.\n" * 4,
        "a text file named .jpg", ["failed"], "not an image")
    add("eps_as_jpeg", "postscript.jpg",
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 28 28\n(hostile) print\nshowpage\n%%EOF\n",
        "an EPS (PostScript) file named .jpg: decoding it would run Ghostscript", ["failed"], "not an image")
    add("exif_garbage", "exif_garbage.jpg",
        digit_jpg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + 6 + 40) + b"Exif\x00\x00"
        + b"MM\x00\x2a\x00\x00\x00\x08\xff\xff" + rng.integers(0, 255, 30, dtype=np.uint8).tobytes()
        + digit_jpg[2:],
        "a JPEG whose EXIF block is a garbage TIFF directory (Pillow warns, decodes)", OK)

    # Colour spaces and modes the decoder must normalise.
    cmyk = np.zeros((28, 28, 4), np.uint8)
    cmyk[..., 0] = 200
    cmyk[..., 3] = pic // 2
    add("cmyk_jpeg", "cmyk.jpg", save(Image.fromarray(cmyk, "CMYK"), "JPEG", quality=90),
        "CMYK JPEG (Adobe APP14, inverted)", ["skipped"], "RGB image")
    add("ycck_jpeg", "ycck.jpg", ycck_jpeg(rng), "YCCK JPEG (Adobe APP14 transform=2; see module doc)",
        ["skipped"], "RGB image")
    add("png_16bit", "grey16.png", save(Image.fromarray(pic.astype(np.uint16) * 257), "PNG"),
        "16-bit greyscale PNG (mode I;16), scaled to 8 bits", OK)
    tint = Image.merge("RGB", [Image.fromarray(pic), Image.fromarray(pic // 2), Image.fromarray(255 - pic)])
    add("palette_transparency", "palette_trns.png", save(tint.quantize(8), "PNG", transparency=0),
        "colour palette PNG with a tRNS chunk (transparent index 0), composited on white",
        ["skipped"], "RGB image")
    add("palette_grey_transparency", "palette_grey_trns.png",
        save(Image.fromarray(pic, "L").quantize(8), "PNG", transparency=0),
        "palette PNG whose colours are all grey, with tRNS: decodes to L", OK)
    add("grey_alpha_png", "grey_alpha.png",
        save(Image.merge("LA", [Image.fromarray(pic), Image.fromarray(255 - pic)]), "PNG"),
        "greyscale + alpha PNG (LA), composited on white to L", OK)

    # EXIF orientation: every file displays as the same 40x24 picture.
    up = upright(rng)
    for o in range(2, 9):
        add(f"exif_orientation_{o}", f"exif_orient_{o}.jpg", exif_jpeg(up, o),
            f"EXIF orientation {o}: stored {'transposed ' if o >= 5 else ''}pixels that display "
            "40 wide x 24 high", ["compressed", "kept_original"], None, orientation=o)
    files["exif_upright.png"] = save(Image.fromarray(up, "L"), "PNG")  # the reference, not a case
    add("exif_orientation_invalid", "exif_orient_9.jpg", exif_jpeg(up, 9),
        "EXIF orientation 9 (out of range): displayed as stored", ["compressed", "kept_original"], None)

    # Animations: the first frame is what gets compressed.
    frames = [Image.fromarray(np.roll(pic, s, axis=1), "L") for s in (0, 4, 8)]
    add("animated_gif", "anim_grey.gif",
        save(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        "3-frame greyscale GIF (first frame used; grey palette decodes to L; stored as PNG)", OK)
    colour = [Image.merge("RGB", [f, f.transpose(Image.Transpose.FLIP_LEFT_RIGHT), f]) for f in frames]
    add("animated_webp", "anim_colour.webp",
        save(colour[0], "WEBP", save_all=True, append_images=colour[1:], duration=100, loop=0, lossless=True),
        "3-frame colour WebP", ["skipped"], "RGB image")

    # Sizes: bombs by header or by compression, never real pixels.
    bomb = png_raw(50_000, 50_000, zlib.compress(b"\x00" * 29))
    add("bomb_header", "bomb_50000x50000.png", bomb,
        "PNG whose IHDR claims 50000x50000 (2.5 Gpx) over a 1-row IDAT", ["skipped"], "exceeds")
    w = h = 8_000
    add("bomb_zlib", "bomb_8000x8000.png", png_raw(w, h, zeros_stream((w + 1) * h, row=w + 1)),
        "a real 8000x8000 all-black PNG: 64 MB of pixels in a ~60 KB zlib stream", ["skipped"], "exceeds")
    add("bomb_ztxt", "bomb_ztxt.png",
        digit_png[:33] + png_chunk(b"zTXt", b"Comment\x00\x00" + zeros_stream(32 << 20)) + digit_png[33:],
        "valid 28x28 PNG carrying a zTXt chunk that inflates to 32 MB (Pillow stops at 1 MB)",
        ["failed"], "too large")
    add("tiny_1x1", "tiny_1x1.png", save(Image.new("L", (1, 1), 128), "PNG"), "a 1x1 image",
        ["compressed", "kept_original"], None)
    strip = np.tile(np.arange(20_000, dtype=np.uint32) % 256, (20, 1)).astype(np.uint8)
    add("wide_20000x20", "wide_20000x20.png", save(Image.fromarray(strip, "L"), "PNG", optimize=True),
        "a 20000x20 greyscale strip (any size is valid: the classifier reads its view)",
        ["compressed", "kept_original"], None)

    # Names that lie about the format.
    add("png_named_jpg", "digit.png", None, "a valid PNG under a .jpg name", OK, key="misnamed/png_named.jpg")
    files["digit.jpg"] = digit_jpg
    add("jpeg_named_png", "digit.jpg", None, "a valid JPEG under a .png name", OK, key="misnamed/jpeg_named.png")

    # Keys (all carry the clean digit).
    unsafe = (["failed"], "unsafe object key")
    add("key_spaces", "digit.png", None, "key with spaces (one doubled)", OK, key="keys/with spaces/a b  c.png")
    add("key_unicode_nfc", "digit.png", None, "key in Unicode NFC (é = U+00E9)", OK, key="keys/unicode/caf\u00e9.png")
    add("key_unicode_nfd", "digit.png", None, "key in Unicode NFD (e + U+0301): a different key",
        OK, key="keys/unicode/cafe\u0301.png")
    add("key_emoji", "digit.png", None, "key with emoji", OK, key="keys/emoji/\U0001F4F7\U0001F525.png")
    add("key_dotdot_inside", "digit.png", None, "key with a `..` segment that stays inside", *unsafe,
        key="keys/a/../dotdot.png", local_src=False)
    add("key_dotdot_escape", "digit.png", None, "key that climbs above the archive root", *unsafe,
        key="../escape.png", local_src=False)
    add("key_dot_segment", "digit.png", None, "key with a `.` segment (aliases keys/dot/x.png on disk)",
        *unsafe, key="keys/dot/./x.png", local_src=False)
    add("key_empty_segment", "digit.png", None, "key with an empty segment `//`", *unsafe,
        key="keys//double.png", local_src=False)
    add("key_backslash", "digit.png", None, "key with a backslash (a path separator on Windows)", *unsafe,
        key="keys/back\\slash.png")
    long_key = "keys/long/" + "/".join([f"{i:02d}" + "d" * 190 for i in range(5)]) + ".png"
    add("key_long_1000_bytes", "digit.png", None, f"key of {len(long_key.encode())} bytes, parts under 255",
        OK, key=long_key)
    add("key_component_255", "digit.png", None,
        "key whose file name is exactly 255 bytes (the local limit): kept as is, it fits; an output "
        "format with a longer extension (.png -> .webp) pushes it over, which must fail cleanly",
        OK, key="keys/max/" + "m" * 251 + ".png", local=(OK + ["failed"], "longer than 255 bytes"))
    add("key_component_over_255", "digit.png", None,
        "key with one 300-byte segment: fine on S3, cannot be a local file name", OK,
        key="keys/toolong/" + "x" * 296 + ".png", local_src=False,
        local=(["failed"], "longer than"))
    return files, cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--check", action="store_true", help="verify the files on disk instead of writing")
    args = ap.parse_args(argv)
    files, cases = build()
    files["manifest.json"] = (json.dumps({"generator": "scripts/make_hostile_corpus.py", "seed": SEED,
                                          "cases": cases}, indent=2, ensure_ascii=False) + "\n").encode()
    total = sum(len(b) for b in files.values())
    if total >= 1 << 20:
        raise SystemExit(f"corpus is {total} bytes, over the 1 MB budget")
    if args.check:
        bad = [n for n, b in files.items() if not (args.out / n).is_file() or (args.out / n).read_bytes() != b]
        stale = sorted({p.name for p in args.out.iterdir()} - set(files)) if args.out.is_dir() else []
        if bad or stale:
            print(f"out of date: {bad} stale: {stale}", file=sys.stderr)
            return 1
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    for p in args.out.iterdir():
        if p.is_file() and p.name not in files:
            p.unlink()
    for name, data in files.items():
        (args.out / name).write_bytes(data)
    print(f"{len(cases)} cases, {len(files)} files, {total} bytes in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
