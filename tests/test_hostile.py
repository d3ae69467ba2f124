"""The hostile-input corpus (tests/data/hostile/, made by scripts/make_hostile_corpus.py)
through whole archive runs: S3 -> S3, S3 -> local folder, and local folder -> local folder
(`nice compress` and `nice compress-folder`), against the real local S3 endpoint.

For every case: exactly one row in the merged savings table, with the status the manifest
expects and a non-empty reason for anything not compressed; the job never crashes, sources
are unchanged and nothing is written outside DST. `pytest -s` prints a table of the cases;
each run also writes it to `hostile-<mode>.txt` in the test's tmp dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import boto3
import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from nice.bundle import NiceModel
from nice.compress.archive import ArchiveOptions, ArchiveRun
from nice.compress.folder import compress_folder
from nice.imageio import decode_image
from nice.storage import LocalStore, open_store

pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")  # exif_garbage.jpg

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "hostile"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
CASES = MANIFEST["cases"]


def expected(case: dict, local_dst: bool) -> dict:
    return case.get("expect_local", case["expect"]) if local_dst else case["expect"]


def short(text: str | None, n: int) -> str:
    text = (text or "").encode("ascii", "backslashreplace").decode("ascii")
    return text if len(text) <= n else text[: n - 3] + "..."


def report(rows_by_key: dict, cases: list[dict], local_dst: bool, mode: str, out_dir: Path) -> str:
    lines = [f"hostile corpus, {mode}: {len(cases)} cases",
             f"{'case':27} {'status':14} {'key':44} reason"]
    for c in cases:
        r = rows_by_key.get(c["key"], {})
        want = expected(c, local_dst)["status"]
        note = "" if r.get("status") in want else f"[UNEXPECTED, want {'/'.join(want)}] "
        lines.append(f"{c['case']:27} {r.get('status', '<no row>'):14} {short(c['key'], 44):44} "
                     f"{note}{short(r.get('error'), 110)}")
    text = "\n".join(lines) + "\n"
    (out_dir / f"hostile-{mode}.txt").write_text(text, encoding="utf-8")
    print("\n" + text)
    return text


def check_rows(rows: list[dict], cases: list[dict], local_dst: bool, mode: str, out_dir: Path) -> dict:
    """One row per case, the expected status, a reason wherever the image was not compressed."""
    counts = Counter(r["source_key"] for r in rows)
    by_key = {r["source_key"]: r for r in rows}
    report(by_key, cases, local_dst, mode, out_dir)
    problems = []
    for c in cases:
        if counts[c["key"]] != 1:
            problems.append(f"{c['case']}: {counts[c['key']]} rows for key {c['key']!r}")
            continue
        r, exp = by_key[c["key"]], expected(c, local_dst)
        if r["status"] not in exp["status"]:
            problems.append(f"{c['case']}: status {r['status']} not in {exp['status']} ({r['error']})")
        if r["status"] != "compressed" and not (r["error"] or "").strip():
            problems.append(f"{c['case']}: {r['status']} without a reason")
        if exp["reason"] and r["status"] != "compressed" and exp["reason"] not in (r["error"] or ""):
            problems.append(f"{c['case']}: reason {r['error']!r} lacks {exp['reason']!r}")
        if r["status"] == "compressed" and not r["output_bytes"] < r["source_bytes"]:
            problems.append(f"{c['case']}: compressed but not smaller")
    extra = set(counts) - {c["key"] for c in cases}
    if extra:
        problems.append(f"rows for keys outside the corpus: {sorted(extra)}")
    outs = [r["output_uri"] for r in rows if r["output_uri"]]
    if len(outs) != len(set(outs)):
        problems.append(f"two rows share an output: {[u for u, n in Counter(outs).items() if n > 1]}")
    assert not problems, "\n".join(problems)
    return by_key


def case_bytes(case: dict) -> bytes:
    return (CORPUS / case["file"]).read_bytes()


def upload(bucket: str, prefix: str) -> dict[str, str]:
    s3 = boto3.client("s3")
    md5 = {}
    for c in CASES:
        data = case_bytes(c)
        s3.put_object(Bucket=bucket, Key=prefix + c["key"], Body=data)
        md5[prefix + c["key"]] = hashlib.md5(data).hexdigest()
    return md5


def bucket_objects(bucket: str) -> dict[str, str]:
    s3 = boto3.client("s3")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["ETag"].strip('"') for o in page.get("Contents", [])})
    return out


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and link under root (links not followed): path -> (size, mtime_ns)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def run_archive(src, dst, small_model, tmp_path) -> list[dict]:
    summary = ArchiveRun(src, dst, NiceModel.load(small_model),
                         opts=ArchiveOptions(shard_size=20, batch_size=16, progress=False,
                                             savings=str(tmp_path / "savings.parquet"))).run()
    assert summary.images == len(pq.read_table(tmp_path / "savings.parquet"))
    return pq.read_table(tmp_path / "savings.parquet").to_pylist()


# -- the corpus itself ---------------------------------------------------------------------------
def test_corpus_is_generated_and_small():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_hostile_corpus.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, "tests/data/hostile is stale: run scripts/make_hostile_corpus.py\n" + done.stderr
    assert sum(p.stat().st_size for p in CORPUS.iterdir()) < 1 << 20
    names = {c["case"] for c in CASES}
    assert len(names) == len(CASES) and len({c["key"] for c in CASES}) == len(CASES)
    for want in ("truncated_jpeg", "truncated_png", "corrupt_jpeg_scan", "corrupt_jpeg_header", "zero_bytes",
                 "text_as_jpeg", "cmyk_jpeg", "ycck_jpeg", "png_16bit", "palette_transparency",
                 "animated_gif", "animated_webp", "bomb_header", "bomb_zlib", "tiny_1x1", "wide_20000x20",
                 "png_named_jpg", "jpeg_named_png", "key_spaces", "key_unicode_nfc", "key_unicode_nfd",
                 "key_emoji", "key_dotdot_inside", "key_dotdot_escape", "key_long_1000_bytes",
                 "key_component_over_255", *(f"exif_orientation_{o}" for o in range(2, 9))):
        assert want in names, want


def test_decoder_applies_exif_orientation_and_colour_transforms():
    upright = np.asarray(Image.open(CORPUS / "exif_upright.png"), dtype=np.int16)
    for o in range(2, 10):
        img = decode_image((CORPUS / f"exif_orient_{o}.jpg").read_bytes()).image
        stored = Image.open(CORPUS / f"exif_orient_{o}.jpg").size
        assert stored == ((24, 40) if 5 <= o <= 8 else (40, 24))
        assert img.size == (40, 24) and np.abs(np.asarray(img, np.int16) - upright).mean() < 4, o
    assert Image.open(CORPUS / "ycck.jpg").info.get("adobe_transform") == 2
    ycck = np.asarray(decode_image((CORPUS / "ycck.jpg").read_bytes()).image, np.int16)
    cmyk = decode_image((CORPUS / "cmyk.jpg").read_bytes())
    assert ycck.shape == (28, 28, 3) and cmyk.mode_in == "CMYK" and cmyk.image.mode == "RGB"
    assert decode_image((CORPUS / "grey16.png").read_bytes()).mode_in.startswith("I")
    assert decode_image((CORPUS / "palette_grey_trns.png").read_bytes()).image.mode == "L"
    assert decode_image((CORPUS / "palette_trns.png").read_bytes()).image.mode == "RGB"


# -- whole runs ------------------------------------------------------------------------------
def test_hostile_s3_to_s3(bucket, small_model, tmp_path):
    sources = upload(bucket, "src/")
    rows = run_archive(open_store(f"s3://{bucket}/src/"), open_store(f"s3://{bucket}/dst/"), small_model, tmp_path)
    by_key = check_rows(rows, CASES, local_dst=False, mode="s3-to-s3", out_dir=tmp_path)
    after = bucket_objects(bucket)
    assert {k: v for k, v in after.items() if k.startswith("src/")} == sources, "sources unchanged"
    assert all(k.startswith(("src/", "dst/")) for k in after), sorted(after)
    outputs = {k for k in after if k.startswith("dst/") and not k.startswith("dst/_nice/")}
    assert {f"s3://{bucket}/{k}" for k in outputs} == {r["output_uri"] for r in rows if r["output_uri"]}
    assert not any("/../" in k or "/./" in k or "//" in k[4:] for k in outputs), outputs
    assert by_key["keys/unicode/caf\u00e9.png"]["output_uri"] != by_key["keys/unicode/cafe\u0301.png"]["output_uri"]


@pytest.mark.slow  # local DST confinement is also checked by the local-folder run below
def test_hostile_s3_to_local_folder(bucket, small_model, tmp_path):
    sources = upload(bucket, "src/")
    dst = tmp_path / "dst"
    watch = tmp_path.parent
    before = tree(watch)
    rows = run_archive(open_store(f"s3://{bucket}/src/"), LocalStore(dst), small_model, tmp_path)
    check_rows(rows, CASES, local_dst=True, mode="s3-to-local", out_dir=tmp_path)
    after = tree(watch)
    ours = {str(tmp_path / "savings.parquet"), str(tmp_path / "hostile-s3-to-local.txt")}
    outside = {p for p in after.keys() - before.keys() if not p.startswith(str(dst) + os.sep)} - ours
    assert not outside, f"written outside DST: {sorted(outside)}"
    assert {p for p in before if after.get(p) != before[p]} == set(), "files outside DST changed"
    assert not (tmp_path / "escape.png").exists()
    assert {k: v for k, v in bucket_objects(bucket).items()} == sources, "sources unchanged, nothing else in S3"
    files = {str(p) for p in dst.rglob("*") if p.is_file() and "_nice" not in p.relative_to(dst).parts}
    assert files == {r["output_uri"] for r in rows if r["output_uri"]}


LOCAL_CASES = [c for c in CASES if c["local_src"]]


# compress-folder is the same archive run as compress between folders: slow only.
@pytest.mark.parametrize("runner", ["compress", pytest.param("compress-folder", marks=pytest.mark.slow)])
def test_hostile_local_folder(runner, small_model, tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    for c in LOCAL_CASES:
        path = src / c["key"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(case_bytes(c))
    sources = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()}
    assert len(sources) == len(LOCAL_CASES), "every local case is its own file"
    watch = tmp_path.parent
    before = tree(watch)
    if runner == "compress":
        rows = run_archive(LocalStore(src), LocalStore(dst), small_model, tmp_path)
        ours = {str(tmp_path / "savings.parquet")}
    else:
        summary = compress_folder(src, dst, NiceModel.load(small_model), progress=False, batch_size=16)
        rows = pq.read_table(summary.savings_path).to_pylist()
        ours = set()
    check_rows(rows, LOCAL_CASES, local_dst=True, mode=f"local-{runner}", out_dir=tmp_path)
    after = tree(watch)
    ours |= {str(tmp_path / f"hostile-local-{runner}.txt")}
    outside = {p for p in after.keys() - before.keys() if not p.startswith(str(dst) + os.sep)} - ours
    assert not outside, f"written outside DST: {sorted(outside)}"
    assert {p for p in before if after.get(p) != before[p]} == set(), "sources or other files changed"
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in src.rglob("*") if p.is_file()} == sources


# -- output names ---------------------------------------------------------------------------------
def test_output_name_keeps_the_key_as_given():
    from nice.codec import output_name

    for case in ("key_dot_segment", "key_empty_segment"):
        key = next(c for c in CASES if c["case"] == case)["key"]
        assert output_name(key, "webp") == key + ".webp"  # not normalised: refused at DST as unsafe


def test_output_names_never_collide():
    from nice.codec import output_name

    for fmt, keys in (("png", ["c/x.jpg", "c/x.png"]), ("webp", ["c/x.gif", "c/x.webp", "c/x.png", "c/x.jpeg"])):
        assert len({output_name(k, fmt) for k in keys}) == len(keys), (fmt, keys)
    assert output_name("c/x.WEBP", "webp") == "c/x.WEBP" and output_name("c/.hidden", "png") == "c/.hidden.png"
