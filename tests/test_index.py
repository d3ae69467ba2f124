"""The partitioned archive index (real files through LocalStore, real Parquet)."""

from __future__ import annotations

import json

import pytest

import nice.compress.index as index_mod
from nice.compress.index import MANIFEST, ArchiveIndex, IndexWriter
from nice.compress.savings import empty_row
from nice.storage import LocalStore


def row(key: str, digest: str = "d1", status: str = "compressed", run: str = "r1") -> dict:
    return {**empty_row(), "source_key": key, "source_etag": "e", "config_hash": "c", "status": status,
            "model_digest": digest, "run_id": run}


def write(store, keys_rows, run="r1", digest="d1") -> IndexWriter:
    writer = IndexWriter(ArchiveIndex(store), run, digest)
    for key, r in keys_rows:
        writer.add(key, r)
    writer.close()
    return writer


@pytest.fixture
def small_partitions(monkeypatch):
    monkeypatch.setattr(index_mod, "PARTITION_ROWS", 10)


def test_partitions_split_merge_and_drop_gone_keys(tmp_path, small_partitions):
    store = LocalStore(tmp_path)
    keys = [f"k{i:03d}" for i in range(55)]
    write(store, [(k, row(k)) for k in keys])
    idx = ArchiveIndex(store)
    assert [p.rows for p in idx.partitions] == [10, 10, 10, 10, 15], "split into pieces above twice the size"
    assert idx.partitions[0].lo == "" and idx.rows == 55
    files = [p.file for p in idx.partitions]
    # Next run: one key of the third partition redone by another model, one key of the fourth gone.
    gone, redone = keys[33], keys[25]
    writer = write(store, [(k, row(k, "d2", run="r2") if k == redone else None) for k in keys if k != gone],
                   run="r2", digest="d2")
    idx2 = ArchiveIndex(store)
    assert idx2.rows == 54 and writer.redone_from_older_models == 1
    kept = [p.file for p in idx2.partitions]
    assert kept[0] == files[0] and kept[1] == files[1] and kept[4] == files[4], "untouched partitions keep their files"
    assert kept[2] != files[2] and kept[3] != files[3]
    assert {o.key for o in store.list("_nice/index/")} == set(kept) | {MANIFEST}, "old files deleted"
    assert writer.older_outputs() == 53 and idx2.older_outputs("d2") == 53
    got = idx2.rows_for([redone, gone, "k999", keys[0]])
    assert set(got) == {redone, keys[0]} and got[redone]["model_digest"] == "d2"
    assert [r["source_key"] for r in idx2.iter_rows(["source_key"])] == [k for k in keys if k != gone]


def test_new_keys_land_between_partitions_and_order_is_enforced(tmp_path, small_partitions):
    store = LocalStore(tmp_path)
    write(store, [(f"b{i:02d}", row(f"b{i:02d}")) for i in range(30)])
    merged = sorted([f"b{i:02d}" for i in range(30)] + ["a", "b05x", "c"])
    write(store, [(k, row(k, run="r2") if k in ("a", "b05x", "c") else None) for k in merged], run="r2")
    idx = ArchiveIndex(store)
    assert [r["source_key"] for r in idx.iter_rows(["source_key"])] == merged
    for k in ("a", "b05x", "c"):
        assert idx.rows_for([k])[k]["run_id"] == "r2"
    writer = IndexWriter(idx, "r3", "d1")
    writer.add("b", None)
    with pytest.raises(ValueError, match="increasing order"):
        writer.add("a", None)


def test_an_index_from_before_partitions_is_read_and_rewritten(tmp_path):
    import io

    import pyarrow.parquet as pq

    from nice.compress.savings import to_table

    store = LocalStore(tmp_path)
    buf = io.BytesIO()
    pq.write_table(to_table([row("x"), row("y", "old")]), buf)
    store.put("_nice/index.parquet", buf.getvalue())
    idx = ArchiveIndex(store)
    assert idx.rows == 2 and idx.older_outputs("d1") == 1
    write(store, [("x", None), ("y", None)])
    assert not store.exists("_nice/index.parquet")
    assert json.loads(store.get(MANIFEST))["rows"] == 2
