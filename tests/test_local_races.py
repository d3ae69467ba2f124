"""Local destinations cannot be raced: a symlink swapped in for a DST folder during a run never
receives a byte, and output names that are another source's key are never overwritten."""

from __future__ import annotations

import ctypes
import io
import os
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import png_bytes
from PIL import Image

from nice.bundle import NiceModel
from nice.compress.archive import ArchiveOptions, ArchiveRun
from nice.compress.listing import CollisionFinder
from nice.storage import LocalStore, StoreError

RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): swap two names atomically (a folder is never missing)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) != 0:
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def files_under(path: Path) -> list[Path]:
    return [p for p in path.rglob("*") if p.is_file() or p.is_symlink()]


def test_a_symlinked_folder_or_file_name_is_never_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.png").write_bytes(b"keep me")
    store = LocalStore(tmp_path / "dst")
    store.put("ok/a.png", b"1")
    (tmp_path / "dst" / "link").symlink_to(outside)
    with pytest.raises(StoreError, match="symlink"):
        store.put("link/a.png", b"2")
    with pytest.raises(StoreError, match="symlink"):
        store.get("link/victim.png")
    assert not store.exists("link/victim.png")
    (tmp_path / "dst" / "ok" / "b.png").symlink_to(outside / "victim.png")
    with pytest.raises(StoreError, match="symlink"):
        store.get("ok/b.png")
    with pytest.raises(StoreError, match="symlink"):
        store.put("ok/b.png", b"3")
    assert (outside / "victim.png").read_bytes() == b"keep me"
    assert sorted(files_under(outside)) == [outside / "victim.png"]
    assert [o.key for o in store.list()] == ["ok/a.png"], "links are not listed"


@pytest.mark.slow
def test_symlink_swapped_in_during_a_run_receives_nothing(tmp_path, small_model, mnist_small):
    _, _, _, split = mnist_small
    src, dst, outside = tmp_path / "src", tmp_path / "dst", tmp_path / "outside"
    n = 200
    for i in range(n):
        label = int(split.labels[i])
        (src / str(label)).mkdir(parents=True, exist_ok=True)
        (src / str(label) / f"{i:04d}.png").write_bytes(png_bytes(split.images[i]))
    labels = sorted({int(split.labels[i]) for i in range(n)})
    outside.mkdir()
    for label in labels:
        (dst / str(label)).mkdir(parents=True)
        (dst / f".swap-{label}").symlink_to(outside)
    stop, swaps = threading.Event(), [0]

    def swapper() -> None:
        # Each label folder spends about half the run as a symlink to `outside`.
        while not stop.is_set():
            for label in labels:
                exchange(dst / str(label), dst / f".swap-{label}")
            stop.wait(0.002)
            for label in labels:
                exchange(dst / str(label), dst / f".swap-{label}")
            swaps[0] += 1
            stop.wait(0.002)

    model = NiceModel.load(small_model)
    opts = ArchiveOptions(batch_size=16, shard_size=100, progress=False)
    thread = threading.Thread(target=swapper)
    thread.start()
    try:
        summary = ArchiveRun(LocalStore(src), LocalStore(dst), model, opts=opts).run()
    finally:
        stop.set()
        thread.join()
    assert swaps[0] > 10
    assert files_under(outside) == [], "nothing written through the swapped-in symlink"
    rows = pq.read_table(dst / "_nice" / "runs" / summary.run_id / "savings.parquet").to_pylist()
    refused = [r for r in rows if r["status"] == "failed"]
    assert refused and all("symlink" in r["error"] for r in refused), "the swap was hit and refused"
    for r in rows:
        if r["output_uri"]:
            path = Path(r["output_uri"])
            assert path.is_file() and not path.is_symlink() and path.stat().st_size == r["output_bytes"]
    again = ArchiveRun(LocalStore(src), LocalStore(dst), model, opts=opts).run()
    assert again.counts["failed"] == 0 and again.extra["processed"] == len(refused)
    assert files_under(outside) == []


def test_collision_finder_sees_appended_names_across_the_sorted_listing():
    finder = CollisionFinder()
    for key in sorted(["a/x", "a/x-1.png", "a/x.webp", "a/x.webp.jpg", "a/y.png", "b/z.png.webp", "b/z.png"]):
        finder.add(key)
    assert finder.taken == {"a/x.webp": "a/x", "a/x.webp.jpg": "a/x.webp", "b/z.png.webp": "b/z.png"}


def test_x_and_x_webp_never_share_an_output(tmp_path, small_model, mnist_small):
    """A source `x` (no extension) beside sources `x.webp`, `x.png`, `x.jpg`, `x.avif`: whatever
    format `x` would be stored in, its name belongs to another source, so `x` gets a failed row
    with the reason and every other source keeps its own output."""
    _, _, _, split = mnist_small
    src, dst = tmp_path / "src", tmp_path / "dst"
    (src / "a").mkdir(parents=True)
    img = Image.fromarray(split.images[0])
    (src / "a" / "x").write_bytes(png_bytes(split.images[1]))
    for fmt, ext in (("WEBP", "webp"), ("PNG", "png"), ("JPEG", "jpg")):
        buf = io.BytesIO()
        img.save(buf, fmt, **({"quality": 95} if fmt != "PNG" else {}))
        (src / "a" / f"x.{ext}").write_bytes(buf.getvalue())
    (src / "a" / "x.avif").write_bytes(png_bytes(np.asarray(img)))  # a PNG under an AVIF name: still a key
    sources = {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    model = NiceModel.load(small_model)
    summary = ArchiveRun(LocalStore(src), LocalStore(dst), model, opts=ArchiveOptions(progress=False)).run()
    rows = {r["source_key"]: r for r in pq.read_table(dst / "_nice" / "runs" / summary.run_id /
                                                       "savings.parquet").to_pylist()}
    assert set(rows) == set(sources)
    x = rows["a/x"]
    assert x["status"] == "failed" and x["output_uri"] is None
    assert "is also a source key" in x["error"] and "a/x." in x["error"]
    outputs = [r["output_uri"] for r in rows.values() if r["output_uri"]]
    assert len(outputs) == len(set(outputs)) == len(sources) - 1, "one output per other source"
    for key, r in rows.items():
        if r["output_uri"]:
            assert r["output_uri"].startswith(str(dst) + "/" + key), "each output is its own source's name"
            assert Path(r["output_uri"]).stat().st_size == r["output_bytes"]
    assert {p.relative_to(src).as_posix(): p.read_bytes() for p in src.rglob("*") if p.is_file()} == sources
