"""Native-resolution throughput of the default path against a plain re-encode, same run.

    .venv/bin/python bench/native_speed.py --model MODEL_DIR [--sizes 1920x1080 4000x3000] [--count 6]
    .venv/bin/python bench/native_speed.py --model MODEL_DIR --rss 200 --sizes 4000x3000

Speed: real photos (scikit-image, scikit-learn, opencv-doc when present) as JPEG q90 at each
size; on one thread (torch and Pillow), images/s of (a) Pillow decode + WebP re-encode at its
default quality and (b) NICE's default path (`Compressor.compress`, the archive job's call),
the ratio b/a (target >= 0.25), the bytes of both, and a profile of where NICE's time goes.
RSS: `nice compress-folder` over N photos of one size in a fresh process; peak RSS from wait4().
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def photo_sources() -> list[Image.Image]:
    import photos

    names = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "motorcycle"]
    out = []
    for n in names:
        try:
            out.append(photos.photo_image(n, (512, 384)) if n != "motorcycle" else None)
        except Exception:  # noqa: BLE001 - a photo this scikit-image lacks
            pass
    opencv = Path("/work/photos/opencv-doc/usr/share/doc/opencv-doc/examples/data")
    if opencv.is_dir():
        for p in sorted(opencv.glob("*.jpg"))[:12]:
            img = Image.open(p).convert("RGB")
            if min(img.size) >= 300:
                out.append(img)
    return [o for o in out if o is not None]


def make_files(size: tuple[int, int], count: int) -> list[bytes]:
    import photos

    srcs = photo_sources()
    return [photos.photo(srcs[i % len(srcs)], size, quality=90) for i in range(count)]


def baseline(files: list[bytes]) -> tuple[float, int]:
    t = time.perf_counter()
    total = 0
    for data in files:
        img = Image.open(io.BytesIO(data))
        img.load()
        buf = io.BytesIO()
        img.save(buf, "WEBP")  # Pillow's default quality (80)
        total += len(buf.getvalue())
    return time.perf_counter() - t, total


def nice_run(model_dir: str, files: list[bytes], profile: bool) -> tuple[float, int, list[dict], str]:
    from nice.bundle import NiceModel
    from nice.compress.engine import Compressor, SourceItem

    comp = Compressor(NiceModel.load(model_dir))
    items = [SourceItem(uri=f"{i}.jpg", key=f"{i}.jpg", data=d) for i, d in enumerate(files)]
    comp.compress(items[:1])  # warm-up (first-call allocations), not timed
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    res = comp.compress(items)
    if prof:
        prof.disable()
    dt = time.perf_counter() - t
    text = ""
    if prof:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
        text = s.getvalue()
    return dt, sum(r.row["output_bytes"] or 0 for r in res), [r.row for r in res], text


def speed(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    for spec in args.sizes:
        w, h = (int(v) for v in spec.split("x"))
        files = make_files((w, h), args.count)
        src = sum(len(f) for f in files)
        base_t, base_b = min((baseline(files) for _ in range(args.repeat)), key=lambda r: r[0])
        nice_t, nice_b, rows, prof = min((nice_run(args.model, files, args.profile) for _ in range(args.repeat)),
                                         key=lambda r: r[0])
        status = {s: sum(r["status"] == s for r in rows) for s in ("compressed", "kept_original", "skipped", "failed")}
        fmts = {f: sum(r["format_out"] == f for r in rows) for f in {r["format_out"] for r in rows}}
        ratio = (len(files) / nice_t) / (len(files) / base_t)
        print(f"{w}x{h}: {len(files)} photos, source {src / len(files) / 1e3:.0f} kB/img")
        print(f"  plain decode + WebP q80: {len(files) / base_t:.3f} img/s, bytes {base_b / src:.3f}x of source")
        print(f"  NICE default path      : {len(files) / nice_t:.3f} img/s, bytes {nice_b / src:.3f}x of source "
              f"({status}, formats {fmts})")
        print(f"  ratio NICE / plain     : {ratio:.3f}  (target >= 0.25: {'met' if ratio >= 0.25 else 'NOT met'})")
        if prof:
            print(prof)


def rss(args: argparse.Namespace) -> None:
    w, h = (int(v) for v in args.sizes[0].split("x"))
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        files = make_files((w, h), min(args.rss, 24))
        for i in range(args.rss):  # distinct bytes per object: a few photos, re-saved with a comment
            (src / f"{i:04d}.jpg").write_bytes(files[i % len(files)][:2] + b"\xff\xfe\x00\x06" + i.to_bytes(4, "big")
                                               + files[i % len(files)][2:])
        cmd = [sys.executable, "-m", "nice.cli", "compress-folder", str(src), str(Path(tmp) / "dst"),
               "--model", args.model, "--threads", "1"]
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        dt = time.perf_counter() - t
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{cmd} failed ({status})")
        print(f"compress-folder over {args.rss} photos of {w}x{h} ({w * h / 1e6:.0f} MP): "
              f"peak RSS {usage.ru_maxrss / 1024:.0f} MB, {dt:.0f} s ({args.rss / dt:.2f} img/s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--sizes", nargs="+", default=["1920x1080", "4000x3000"])
    ap.add_argument("--count", type=int, default=6)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rss", type=int, default=0, help="measure peak RSS over this many photos instead")
    ap.add_argument("--tmp", default=None)
    args = ap.parse_args()
    np.random.seed(0)
    (rss if args.rss else speed)(args)


if __name__ == "__main__":
    main()
