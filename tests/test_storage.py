import sys

import boto3
import pytest

from nice.storage import LocalStore, S3Store, StoreError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    request.getfixturevalue("s3_endpoint")
    return open_store(f"s3://{request.getfixturevalue('bucket')}/some/prefix/")


def test_put_get_list_exists(store):
    store.put("a/one.png", b"1111", {"nice-source-etag": "x"})
    store.put("b/two.jpg", b"22")
    assert store.get("a/one.png") == b"1111"
    assert store.exists("b/two.jpg") and not store.exists("b/three.jpg")
    objs = list(store.list())
    assert [o.key for o in objs] == ["a/one.png", "b/two.jpg"]
    assert [o.size for o in objs] == [4, 2] and all(o.etag for o in objs)
    assert [o.key for o in store.list("b/")] == ["b/two.jpg"]
    store.put("a/one.png", b"changed")
    assert {o.key: o.etag for o in store.list()}["a/one.png"] != objs[0].etag


@pytest.mark.parametrize("key", ["../escape.png", "/abs.png", "a/../../b.png", ""])
def test_unsafe_keys_refused(store, key):
    with pytest.raises(StoreError):
        store.put(key, b"x")


def test_s3_listing_paginates_and_keeps_prefix(bucket):
    from concurrent.futures import ThreadPoolExecutor

    client = boto3.client("s3")
    with ThreadPoolExecutor(16) as pool:  # more than one LIST page (1,000 keys), uploaded concurrently
        list(pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"p/{i:05d}.bin", Body=b"x"), range(1105)))
    client.put_object(Bucket=bucket, Key="other/zzz.bin", Body=b"x")
    store = S3Store(bucket, "p")
    keys = [o.key for o in store.list()]
    assert len(keys) == 1105 and keys[0] == "00000.bin"
    assert store.uri_for("00001.bin") == f"s3://{bucket}/p/00001.bin"


def test_s3_metadata_is_stored(bucket):
    store = open_store(f"s3://{bucket}/out")
    store.put("k.png", b"abc", {"nice-config-hash": "deadbeef"})
    head = boto3.client("s3").head_object(Bucket=bucket, Key="out/k.png")
    assert head["Metadata"]["nice-config-hash"] == "deadbeef"


def test_list_with_partial_name_prefix(store):
    for k in ("runs/r1/parts/shard-00000-00000.parquet", "runs/r1/parts/shard-00000-00001.parquet",
              "runs/r1/parts/shard-00001-00000.parquet"):
        store.put(k, b"x")
    assert [o.key for o in store.list("runs/r1/parts/shard-00000-")] == [
        "runs/r1/parts/shard-00000-00000.parquet", "runs/r1/parts/shard-00000-00001.parquet"]
    assert len(list(store.list("runs/r1/parts/"))) == 3


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (a dead child nobody reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_the_local_s3_server_stops_when_the_process_that_started_it_is_killed():
    """A killed `nice demo` (SIGKILL: no `finally` runs) must not leave moto's server behind."""
    import subprocess
    import time
    from pathlib import Path

    code = ("import time; from pipeline.s3_local import LocalS3; s = LocalS3(); s.__enter__(); "
            "print(s._proc.pid, flush=True); time.sleep(300)")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        server = int(parent.stdout.readline())
        assert _running(server)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 15
    while _running(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _running(server)
