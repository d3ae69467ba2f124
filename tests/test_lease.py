"""One writer per destination: DST's lease on a local folder and on S3 (moto server over HTTP)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest
from test_archive import upload_mnist

from nice.compress.lease import Lease, LeaseHeld, LeaseLost
from nice.storage import open_store

LEASE = 25  # seconds: longer than a fresh `python -m nice` takes to start on a busy machine


@pytest.fixture(params=["local", "s3"])
def dst_uri(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "dst")
    bucket = request.getfixturevalue("bucket")
    return f"s3://{bucket}/dst/"


def test_one_holder_at_a_time_and_the_message_names_it(dst_uri):
    store = open_store(dst_uri)
    a = Lease(store, "run-a", ttl=30)
    a.acquire()
    with pytest.raises(LeaseHeld, match=r"in use by archive run run-a \(.+:\d+, lease renewed \d+ s ago"):
        Lease(store, "run-b", ttl=30).acquire()
    # A step of the same run joins instead of competing; a fresh run of another id does not.
    Lease(store, "run-a", ttl=30).acquire(join=True)
    with pytest.raises(LeaseHeld):
        Lease(store, "run-b", ttl=30).acquire(join=True)
    a.release()
    b = Lease(store, "run-b", ttl=30)
    assert b.acquire().generation == 2
    assert [o.key for o in store.list("_nice/lease/")] == ["_nice/lease/000000000002.json"], "history cleaned"


def test_concurrent_takers_exactly_one_wins(dst_uri):
    store = open_store(dst_uri)
    won, held = [], []
    start = threading.Barrier(8)

    def take(i: int) -> None:
        lease = Lease(open_store(dst_uri), f"run-{i}", ttl=30)
        start.wait()
        try:
            lease.acquire()
            won.append(i)
        except LeaseHeld as exc:
            held.append(exc.record.run_id)

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(held) == 7, (won, held)
    assert set(held) == {f"run-{won[0]}"}
    assert Lease(store, "x").current()[1].run_id == f"run-{won[0]}"


def test_a_stale_lease_is_taken_over_and_its_holder_stops(dst_uri):
    store = open_store(dst_uri)
    old = Lease(store, "run-a", ttl=0.6)
    old.acquire()  # never renewed: as if the process had been killed
    with pytest.raises(LeaseHeld):
        Lease(store, "run-b", ttl=0.6).acquire()
    time.sleep(0.8)
    new = Lease(store, "run-b", ttl=0.6)
    assert new.acquire().generation == 2
    old.renew()  # the old holder wakes up: it finds the newer generation
    with pytest.raises(LeaseLost, match="taken over"):
        old.check()


def test_wait_queues_behind_the_holder(dst_uri):
    store = open_store(dst_uri)
    a = Lease(store, "run-a", ttl=30)
    a.acquire()
    a.start_renewing()
    threading.Timer(1.0, a.release).start()
    t = time.monotonic()
    Lease(store, "run-b", ttl=30).acquire(wait=True, poll=0.1)
    assert 0.9 < time.monotonic() - t < 10


def _parts(store, prefix="_nice/runs/") -> int:
    return sum(1 for o in store.list(prefix) if "/parts/" in o.key)


@pytest.mark.slow
def test_two_runs_on_one_dst_then_sigkill_and_takeover(dst_uri, small_model, tmp_path, request):
    """Acceptance: two `nice compress` started together on one DST, exactly one runs and the
    other exits 2 naming the holder; SIGKILL the holder; a rerun within the lease time is
    refused; past it, the rerun takes over, resumes the interrupted run and ends exactly once."""
    from nice.data.mnist import load_split

    split = load_split("mnist", "test")
    n = 300
    if dst_uri.startswith("s3://"):
        bucket = dst_uri[5:].split("/")[0]
        upload_mnist(bucket, "src", split, 0, n)
        src = f"s3://{bucket}/src/"
    else:
        from nice.data.sources import export_png_folder

        src = str(export_png_folder(split, tmp_path / "src", limit=n))
    cmd = [sys.executable, "-m", "nice", "compress", src, dst_uri, "--model", str(small_model),
           "--batch-size", "16", "--shard-size", "100", "--threads", "1", "--lease-seconds", str(LEASE)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
             for _ in range(2)]
    store = open_store(dst_uri)
    deadline = time.time() + 180
    loser = None
    while time.time() < deadline and loser is None:
        loser = next((p for p in procs if p.poll() is not None), None)
        time.sleep(0.05)
    assert loser is not None, "one of the two runs must stop at once"
    holder = procs[1 - procs.index(loser)]
    err = loser.stderr.read()
    assert loser.returncode == 2, err
    assert holder.poll() is None, "the other one runs"
    while time.time() < deadline and _parts(store) < 6:
        time.sleep(0.1)
    os.killpg(holder.pid, signal.SIGKILL)
    holder.wait()
    killed = time.monotonic()
    run_id = json.loads(store.get("_nice/latest-run.json"))["run_id"]
    assert err.strip().splitlines() == [err.strip()] and err.startswith("error: ") and f"archive run {run_id} " in err
    assert "Traceback" not in err
    assert json.loads(store.get(f"_nice/runs/{run_id}/manifest.json"))["status"] == "running", "killed mid-run"
    early = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert early.returncode == 2 and f"archive run {run_id} " in early.stderr, "the lease is still live"
    time.sleep(max(0.0, killed + LEASE + 1 - time.monotonic()))
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["run_id"] == run_id, "the takeover resumes the interrupted run"
    assert summary["extra"]["processed"] == n and summary["images"] == n
    import io

    rows = pq.read_table(io.BytesIO(store.get(f"_nice/runs/{run_id}/savings.parquet"))).to_pylist()
    keys = [r["source_key"] for r in rows]
    assert len(keys) == n and len(set(keys)) == n, "every object exactly once"
    outputs = {o.key for o in store.list() if not o.key.startswith("_nice/")}
    assert {store.uri_for(k) for k in outputs} == {r["output_uri"] for r in rows if r["output_uri"]}
    lease = Lease(store, "probe").current()[1]
    assert lease.released and lease.run_id == run_id
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0 and json.loads(again.stdout)["extra"]["processed"] == 0, "ended exactly once"
