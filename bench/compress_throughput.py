"""Throughput of the full NICE path against the floor a user compares it with.

Same images, same run, one thread: (a) decode + re-encode with Pillow at the codec settings
NICE uses, (b) the whole NICE path (decode, classify, mask, mix, encode, guard: decode and
classify the output, retries). Prints images/s of each and the ratio, then a profile of (b).

    .venv/bin/python bench/compress_throughput.py --sizes 64 224 [--model DIR]

Images are random crops of the real photos bundled with scikit-image, stored as JPEG q90.
`--images mnistm` uses mnist-m test images instead, the domain of a model trained with
`nice ingest mnist-m`: there the guard passes at the first tau for most images, which is
the path a real archive run takes. Without --model an untrained colour model is used (architecture = `colour_default()`); its
guard usually retries every tau level, so that is the slow end of the NICE path.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np
import torch
from PIL import Image

from nice.bundle import NiceModel
from nice.codec import fixed_effort, fixed_rung, output_format
from nice.compress.engine import Compressor, SourceItem
from nice.config import colour_default

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")


def photo_crops(size: int, n: int, seed: int = 0, quality: int = 90) -> list[bytes]:
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [getattr(skimage.data, name)() for name in PHOTOS]
    out = []
    for i in range(n):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 4, min(h, w)))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = Image.fromarray(img[y:y + side, x:x + side]).resize((size, size), Image.Resampling.BICUBIC)
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def mnistm_images(size: int, n: int, quality: int = 90) -> list[bytes]:
    """mnist-m test images (digits over real photo crops), the domain of a trained colour model."""
    from nice.data.mnistm import make_mnistm

    images, _, _ = make_mnistm("test", size=size, limit=n)
    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def floor(images: list[bytes], cfg) -> float:
    """Plain Pillow: open, decode, re-encode at the codec settings (what a user's script does)."""
    fmt = output_format(cfg.codec, "JPEG")
    args = fixed_effort(cfg.codec).args(fixed_rung(cfg.codec, fmt), "RGB")  # the fixed path's writer arguments
    t = time.perf_counter()
    for data in images:
        img = Image.open(io.BytesIO(data))
        img.load()
        img.save(io.BytesIO(), fmt.upper(), **args)
    return len(images) / (time.perf_counter() - t)


PATHS = {  # name -> (search enabled, pruned search)
    "search": (True, True),  # the default path
    "bisect": (True, False),  # the search before issue 19: plain bisection of every ladder and level
    "fixed": (False, True),
}


def nice_path(images: list[bytes], model: NiceModel, batch: int, profile: bool = False, path: str = "search"):
    search, prune = PATHS[path]
    comp = Compressor(model, model.config.with_overrides({"search": {"enabled": search}}), batch_size=batch)
    comp.search.prune = prune
    items = [SourceItem(uri=f"img{i}.jpg", key=f"img{i}.jpg", data=d) for i, d in enumerate(images)]
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    rows = []
    for s in range(0, len(items), batch):
        rows += [r.row for r in comp.compress(items[s:s + batch])]
    if prof:
        prof.disable()
    return len(images) / (time.perf_counter() - t), rows, prof


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", help="a trained colour model directory (default: untrained colour_default)")
    ap.add_argument("--images", choices=("photos", "mnistm"), default="photos",
                    help="random photo crops, or mnist-m test images (use with a model trained on mnist-m)")
    ap.add_argument("--profile-top", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of floor and NICE; the best of each counts")
    ap.add_argument("--path", choices=("search", "fixed", "both"), default="both",
                    help="the per-image operating-point search (the default product path; printed next to the "
                         "plain-bisection search it replaced, measured first), the fixed tau path, or both")
    ap.add_argument("--width", type=int, help="override the untrained classifier's ResNet width")
    ap.add_argument("--pre-pool", type=int, help="override the untrained generator's input pooling")
    ap.add_argument("--gen-width", type=int, help="override the untrained generator's width")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        model = NiceModel.load(args.model)
    else:
        cfg = colour_default()
        if args.width:
            cfg.classifier.width = args.width
        if args.pre_pool:
            cfg.generator.pre_pool = args.pre_pool
        if args.gen_width:
            cfg.generator.width = args.gen_width
        torch.manual_seed(0)
        model = NiceModel.untrained(cfg)
    c = model.config
    print(f"threads={args.threads} batch={args.batch} images={args.n} model={model.uri} "
          f"classifier={c.classifier.arch}(width {c.classifier.width}) generator={c.generator.arch}"
          f"(width {c.generator.width}, pre_pool {c.generator.pre_pool}) block={c.gates.block} "
          f"mixing={c.mixing.mode} fixed-path codec=jpeg q{c.codec.quality} search formats={c.search.formats} "
          f"keep={c.search.keep} qualities={c.search.qualities} images={args.images}")
    print(f"{'size':>5} {'path':>6} {'floor img/s':>12} {'NICE img/s':>11} {'ratio':>6} {'compressed':>10} "
          f"{'bytes ratio':>11} {'vs bisect':>9}")
    profiles = {}
    paths = {"search": ["bisect", "search"], "fixed": ["fixed"], "both": ["bisect", "search", "fixed"]}[args.path]
    for size in args.sizes:
        images = (mnistm_images if args.images == "mnistm" else photo_crops)(size, args.n)
        floor(images[:32], model.config)  # warm-up
        out_bytes: dict[str, int] = {}
        for name in paths:
            nice_path(images[:32], model, args.batch, path=name)
            # Interleaved repeats, best of each (as timeit): a shared machine slows either side
            # at random, and the floor alone varied by ~20% between runs.
            f, n = 0.0, 0.0
            for _ in range(args.repeat):
                f = max(f, floor(images, model.config))
                n_i, rows, _ = nice_path(images, model, args.batch, path=name)
                n = max(n, n_i)
            comp = sum(r["status"] == "compressed" for r in rows)
            src = sum(r["source_bytes"] for r in rows)
            out_bytes[name] = out = sum(r["output_bytes"] or r["source_bytes"] for r in rows)
            vs = f"{out / out_bytes['bisect'] - 1:+9.1%}" if name == "search" and "bisect" in out_bytes else \
                f"{'':>9}"
            print(f"{size:>5} {name:>6} {f:>12.0f} {n:>11.0f} {n / f:>6.3f} {comp:>10} {out / src:>11.3f} {vs}",
                  flush=True)
            if args.profile_top:
                profiles[(size, name)] = nice_path(images, model, args.batch, profile=True, path=name)[2]
    for (size, name), prof in profiles.items():
        print(f"\nprofile of the NICE {name} path at {size} px (cumulative seconds, top {args.profile_top}):")
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(args.profile_top)


if __name__ == "__main__":
    main()
