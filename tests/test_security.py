"""Security properties: model files cannot run code, a local DST confines every write, and
S3 credentials never reach our logs or output.

Logging decision (see docs/architecture.md, "Hostile input"): botocore's own DEBUG logging
prints request headers, and the SigV4 `Authorization` header names the access key id (never
the secret, which is only used to sign). The project never turns botocore DEBUG on: the CLI
logs at WARNING, or INFO with `-v`, for every logger. These tests pin that down: with DEBUG
on everywhere the secret still appears nowhere and the key id only in botocore's DEBUG
records; at the levels our CLI uses, neither appears at all.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import boto3
import numpy as np
import pytest
import torch

from nice.bundle import CLASSIFIER_FILE, GENERATOR_FILE, NiceModel
from nice.checkpoint import CheckpointError, read_checkpoint
from nice.storage import LocalStore, StoreError, check_key, open_store

from conftest import png_bytes

ROOT = Path(__file__).resolve().parents[1]


# -- (a) model files never run code ---------------------------------------------------------------
class Touch:
    """Unpickling this creates a marker file (a stand-in for any code a payload could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Plain:
    """An arbitrary class instance: harmless, but not a tensor or a plain container."""

    def __init__(self) -> None:
        self.x = 1


def test_payload_is_live_but_never_runs_through_nice_model_load(small_model, tmp_path):
    import shutil

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "nice-checkpoint/1", "kind": "classifier", "payload": Touch(marker)}, evil)
    for which in (CLASSIFIER_FILE, GENERATOR_FILE):
        model_dir = tmp_path / f"model-{which}"
        shutil.copytree(small_model, model_dir)
        shutil.copy(evil, model_dir / which)
        with pytest.raises(CheckpointError, match="weights-only"):
            NiceModel.load(model_dir)
        assert not marker.exists(), f"unpickling {which} ran code"
    from nice.bundle import resolve_model

    with pytest.raises(CheckpointError):
        resolve_model(str(tmp_path / f"model-{CLASSIFIER_FILE}"))
    assert not marker.exists()
    # Control: an unsafe load really would have run the payload.
    torch.load(evil, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("payload", ["instance", "module"])
def test_pickled_objects_are_refused(tmp_path, payload):
    path = tmp_path / "x.pt"
    obj = Plain() if payload == "instance" else torch.nn.Linear(2, 2)  # a whole pickled module
    torch.save({"format": "nice-checkpoint/1", "kind": "classifier", "config": "{}", "meta": "{}",
                "state_dict": obj}, path)
    with pytest.raises(CheckpointError, match="not a loadable weights-only checkpoint"):
        read_checkpoint(path, "classifier")


# -- (b) a local DST confines every write -------------------------------------------------------
def _tree(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(root.rglob("*")):
        out[str(p)] = os.readlink(p) if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.fixture
def confined(tmp_path):
    root, outside = tmp_path / "dst", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "victim.png").write_bytes(b"original")
    (root / "link").symlink_to(outside, target_is_directory=True)  # a folder inside that points outside
    (root / "sub" / "victim.png").symlink_to(outside / "victim.png")  # a file inside that points outside
    return LocalStore(root), root, outside


@pytest.mark.parametrize("key", [
    "../escape.png", "sub/../../escape.png", "a/../b.png", "./a.png", "a/./b.png", "a//b.png", "a/",
    "/etc/escape.png", "/tmp/abs-escape.png", "..\\escape.png", "sub\\..\\..\\escape.png",
    "a\x00b.png", "", "link/escape.png", "link/../../escape.png", "sub/victim.png",
    "x" * 256 + ".png", "sub/" + "é" * 128 + ".png",
])
def test_local_store_refuses_keys_that_escape(confined, key, tmp_path):
    store, root, outside = confined
    before_outside, before_tmp = _tree(outside), {p.name for p in tmp_path.iterdir()}
    with pytest.raises(StoreError):
        store.put(key, b"hostile")
    with pytest.raises(StoreError):
        store.get(key)
    assert _tree(outside) == before_outside, "nothing written outside"
    assert {p.name for p in tmp_path.iterdir()} == before_tmp
    assert not Path("/tmp/abs-escape.png").exists() and not Path("/etc/escape.png").exists()
    assert (outside / "victim.png").read_bytes() == b"original"


def test_local_store_accepts_ordinary_keys(confined):
    store, root, _ = confined
    for key in ["a.png", "sub/b c.png", "caf\u00e9/\U0001F4F7.png", "m" * 251 + ".png", "deep/" * 20 + "x.png",
                "..dots..png", "a/.hidden.png"]:
        store.put(key, b"ok")
        assert store.get(key) == b"ok" and Path(store.uri_for(key)).is_relative_to(root)
    assert not any(p.name.endswith(".tmp") for p in root.rglob("*"))
    assert check_key("a/b.png") == "a/b.png"


def test_local_source_listing_does_not_follow_links_out(confined):
    store, root, outside = confined
    (root / "sub" / "real.png").write_bytes(b"inside")
    keys = [o.key for o in store.list()]
    assert keys == ["sub/real.png"], keys  # neither the linked folder nor the linked file


# -- (c) credentials never reach logs -----------------------------------------------------------
def _upload_digits(bucket: str, n: int = 12) -> None:
    s3 = boto3.client("s3")
    rng = np.random.default_rng(0)
    for i in range(n):
        arr = np.zeros((28, 28), np.uint8)
        arr[6:22, 12:16] = 255
        arr = np.clip(arr.astype(int) + rng.integers(0, 30, arr.shape), 0, 255).astype(np.uint8)
        s3.put_object(Bucket=bucket, Key=f"src/1/{i:03d}.png", Body=png_bytes(arr))
    s3.put_object(Bucket=bucket, Key="src/bad/notes.jpg", Body=b"not an image")


def _secrets() -> tuple[str, str]:
    key_id, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    assert len(key_id) >= 8 and len(secret) >= 8
    return key_id, secret


def test_credentials_never_in_logs_even_at_debug(bucket, small_model, caplog, capfd):
    from nice.compress.archive import ArchiveOptions, ArchiveRun

    key_id, secret = _secrets()
    _upload_digits(bucket)
    model = NiceModel.load(small_model)
    with caplog.at_level(logging.DEBUG):  # root: every logger, botocore and urllib3 included
        summary = ArchiveRun(open_store(f"s3://{bucket}/src/"), open_store(f"s3://{bucket}/dst/"), model,
                             opts=ArchiveOptions(progress=True)).run()
    assert summary.images == 13 and summary.counts["failed"] == 1
    out, err = capfd.readouterr()
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert any(name.startswith("botocore") for name, _, _ in records), "DEBUG capture really on"
    text = "\n".join(m for _, _, m in records) + caplog.text + out + err
    assert secret not in text, "the secret key is never logged, not even by botocore DEBUG"
    with_id = {name for name, _, m in records if key_id in m}
    # Only botocore's DEBUG header dump names the key id (in the SigV4 Authorization header).
    assert all(name.startswith("botocore") for name in with_id), with_id
    assert not [m for _, lvl, m in records if lvl >= logging.INFO and key_id in m]
    assert not [m for name, _, m in records if name.startswith("nice") and key_id in m]
    assert key_id not in out + err


def test_cli_logging_never_enables_botocore_debug(bucket, small_model, tmp_path):
    """`nice -v compress` end to end in a subprocess: INFO for everyone, no DEBUG anywhere,
    no credential in stdout or stderr."""
    key_id, secret = _secrets()
    _upload_digits(bucket, 4)
    code = ("import logging, sys\n"
            "from nice.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "levels = {n: logging.getLogger(n).getEffectiveLevel() for n in ('botocore', 'boto3', 'urllib3', 'nice')}\n"
            "print('LEVELS ' + repr(levels), file=sys.stderr)\n"
            "sys.exit(rc)\n")
    done = subprocess.run([sys.executable, "-c", code, "-v", "compress", f"s3://{bucket}/src/", f"s3://{bucket}/dst/",
                           "--model", str(small_model), "--threads", "1"],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    both = done.stdout + done.stderr
    assert secret not in both and key_id not in both
    assert " DEBUG " not in done.stderr
    levels = eval(done.stderr.rsplit("LEVELS ", 1)[1].splitlines()[0])  # noqa: S307 - our own repr
    assert min(levels.values()) >= logging.INFO, levels
    assert json.loads(done.stdout)["images"] == 5


def test_no_code_turns_on_boto_debug_logging():
    hits = []
    for folder in ("nice", "components", "pipeline"):
        for p in (ROOT / folder).rglob("*.py"):
            text = p.read_text(encoding="utf-8")
            for bad in ("set_stream_logger", 'getLogger("botocore").setLevel(logging.DEBUG',
                        "getLogger('botocore').setLevel(logging.DEBUG"):
                if bad in text:
                    hits.append(f"{p.relative_to(ROOT)}: {bad}")
    assert not hits, hits
