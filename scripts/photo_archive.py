#!/usr/bin/env python3
"""Write the acceptance corpus: real photos at native camera/phone sizes, as an archive holds them.

    python scripts/photo_archive.py OUT_DIR [--count 48] [--opencv DIR] [--seed 0]

Sources: scikit-image's bundled colour photos, scikit-learn's sample images (china, flower; if
scikit-learn is installed) and, given --opencv DIR or when the default folder below exists, the
jpg/png photos larger than 300x300 of Debian's opencv-doc examples/data (fetch it once with
`cd /work/photos && apt-get download opencv-doc && dpkg -x opencv-doc_*.deb opencv-doc`).
Nothing is downloaded here.

Files (`--count` in all, at least 9): JPEG q90 at sizes spread from 640x480 to 4000x3000
(4:3, 3:2, 16:9, landscape and portrait; upscaled with LANCZOS where the source is smaller),
plus one each of: EXIF-rotated JPEG (orientation 6 and 8, with a camera thumbnail), CMYK JPEG
with an ICC profile, 16-bit PNG, grey JPEG, HEIC, palette PNG, and a 17000x1200 panorama JPEG
(wider than WebP's 16,383 limit). Deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
import photos  # noqa: E402  (tests/photos.py: the encoders the tests use too)

OPENCV_DEFAULT = Path("/work/photos/opencv-doc/usr/share/doc/opencv-doc/examples/data")
SKIMAGE_COLOUR = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
SPECIALS = 8
MIN_SIDE = 300
# opencv-doc files that are drawings, renders or ground truth rather than photos
OPENCV_NOT_PHOTOS = {"chessboard", "digits", "ellipses", "detect_blob", "imageTextN", "imageTextR", "ml",
                     "opencv-logo", "cards", "aloeGT", "pca_test1", "gradient", "LinuxLogo", "WindowsLogo"}


def opencv_dir(given: str | None) -> Path | None:
    if given is None:
        return OPENCV_DEFAULT if OPENCV_DEFAULT.is_dir() else None
    path = Path(given)
    nested = path / "usr/share/doc/opencv-doc/examples/data"
    return nested if nested.is_dir() else path


def sources(opencv: Path | None) -> list[tuple[str, Image.Image]]:
    """(name, RGB or L image) of every source photo, in a fixed order."""
    out = [(name, Image.fromarray(photos.source(name)).convert("RGB")) for name in SKIMAGE_COLOUR]
    try:
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        for fname, arr in zip(sample.filenames, sample.images):
            out.append((Path(fname).stem, Image.fromarray(arr).convert("RGB")))
    except ImportError:
        pass
    if opencv is not None:
        for path in sorted(opencv.iterdir()):
            if path.suffix.lower() not in (".jpg", ".jpeg", ".png") or not path.is_file():
                continue
            if path.stem in OPENCV_NOT_PHOTOS or re.fullmatch(r"(left|right)(0[4-9]|1\d)", path.stem):
                continue  # (of the 26 stereo-calibration shots, three pairs are enough)
            try:
                with Image.open(path) as img:
                    img.load()
                    if min(img.size) <= MIN_SIDE:
                        continue
                    grey = img.mode in ("L", "I;16", "I", "1", "LA") or (img.mode == "RGB" and _neutral(img))
                    if img.mode in ("RGBA", "LA", "PA", "P"):
                        rgba = img.convert("RGBA")
                        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
                    out.append((f"opencv-{path.stem}", img.convert("L" if grey else "RGB")))
            except OSError:
                continue
    return out


def _neutral(img: Image.Image) -> bool:
    arr = np.asarray(img)
    return bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())


def plain_sizes(n: int, rng: random.Random) -> list[tuple[int, int]]:
    """`n` sizes whose pixel counts spread geometrically from 640x480 to 4000x3000."""
    aspects = [(4, 3), (3, 2), (16, 9), (4, 3)]
    lo, hi = 640 * 480, 4000 * 3000
    out = []
    for i in range(n):
        pixels = lo * (hi / lo) ** (i / max(1, n - 1))
        aw, ah = aspects[i % len(aspects)]
        if i in (0, n - 1):
            aw, ah = 4, 3  # the two ends exactly: 640x480 and 4000x3000
        h = round((pixels * ah / aw) ** 0.5)
        w = round(h * aw / ah)
        scale = max(480 / h, 1.0) * min(4000 / max(w, round(480 * aw / ah)), 1.0)
        w, h = round(w * scale), round(h * scale)  # short side >= 480, long side <= 4000
        if i == 0:
            w, h = 640, 480
        elif i == n - 1:
            w, h = 4000, 3000
        out.append((w, h) if i % 3 != 1 else (h, w))  # every third one portrait
    rng.shuffle(out)
    return out


def panorama(srcs: list[tuple[str, Image.Image]], rng: random.Random, size=(17000, 1200)) -> Image.Image:
    """A wide strip of several colour photos side by side, each fitted to the strip's height."""
    w, h = size
    colour = [img for _, img in srcs if img.mode == "RGB"]
    strip = Image.new("RGB", size)
    x = 0
    while x < w:
        img = rng.choice(colour)
        tile_w = min(w - x, rng.randrange(2 * h, 4 * h))
        strip.paste(photos.fit(img, (tile_w, h)), (x, 0))
        x += tile_w
    return strip


def build(out_dir: Path, count: int, opencv: Path | None, seed: int) -> tuple[list[Path], int]:
    """Write the corpus; returns the files written and how many source photos they came from."""
    if count < SPECIALS + 1:
        raise SystemExit(f"--count must be at least {SPECIALS + 1}")
    rng = random.Random(seed)
    srcs = sources(opencv)
    colour = [(n, img) for n, img in srcs if img.mode == "RGB"]
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def write(fname: str, data: bytes) -> None:
        path = out_dir / fname
        path.write_bytes(data)
        written.append(path)

    order = list(range(len(srcs)))
    rng.shuffle(order)
    for i, size in enumerate(plain_sizes(count - SPECIALS, rng)):
        name, img = srcs[order[i % len(order)]]
        write(f"{i:03d}_{name}_{size[0]}x{size[1]}.jpg", photos.photo(img, size, "JPEG", quality=90))

    def pick() -> tuple[str, Image.Image]:
        return colour[rng.randrange(len(colour))]

    name, img = pick()
    write(f"rot6_{name}_3024x4032.jpg", photos.rotated_jpeg(img, (3024, 4032), orientation=6, quality=90))
    name, img = pick()
    write(f"rot8_{name}_3000x4000.jpg", photos.rotated_jpeg(img, (3000, 4000), orientation=8, quality=90))
    name, img = pick()
    write(f"cmyk_icc_{name}_2400x1800.jpg", photos.cmyk_jpeg(img, (2400, 1800), quality=90))
    name, img = pick()
    write(f"png16_{name}_2000x1500.png", photos.png16(img, (2000, 1500)))
    name, img = pick()
    write(f"grey_{name}_3000x2000.jpg", photos.photo(img.convert("L"), (3000, 2000), "JPEG", quality=90))
    name, img = pick()
    write(f"heic_{name}_4032x3024.heic", photos.heic(img, (4032, 3024), quality=80))
    name, img = pick()
    write(f"palette_{name}_1024x768.png", photos.palette_png(img, (1024, 768), colours=256))
    write("panorama_17000x1200.jpg", photos.encode(panorama(colour, rng), "JPEG", quality=90))
    return written, len(srcs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--count", type=int, default=48, help="files in all (default 48)")
    ap.add_argument("--opencv", help="opencv-doc examples/data folder (or the dpkg -x root)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    opencv = opencv_dir(args.opencv)
    if opencv is not None and not opencv.is_dir():
        ap.error(f"--opencv {opencv}: not a folder")
    paths, n_sources = build(args.out_dir, args.count, opencv, args.seed)
    total = sum(p.stat().st_size for p in paths)
    kinds: dict[str, int] = {}
    for p in paths:
        kinds[p.suffix.lstrip(".")] = kinds.get(p.suffix.lstrip("."), 0) + 1
    sizes = [Image.open(p).size for p in paths]  # (HEIF is registered by the HEIC encode)
    mp = [w * h / 1e6 for w, h in sizes]
    print(f"photo_archive: {len(paths)} files, {total / 1e6:.1f} MB in {args.out_dir} "
          f"({', '.join(f'{v} {k}' for k, v in sorted(kinds.items()))}; "
          f"{min(mp):.2f}-{max(mp):.1f} MP; {n_sources} source photos, opencv-doc {'used' if opencv else 'absent'}; "
          f"seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
