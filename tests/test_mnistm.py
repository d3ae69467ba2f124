import numpy as np
import pytest

from nice.data.mnistm import composite, make_mnistm


@pytest.mark.parametrize("size", [64, 128, 224])
def test_mnistm_shapes_and_determinism(size):
    a, la, names = make_mnistm("test", size, limit=12, seed=1)
    b, lb, _ = make_mnistm("test", size, limit=12, seed=1)
    c, _, _ = make_mnistm("test", size, limit=12, seed=2)
    assert a.shape == (12, size, size, 3) and a.dtype == np.uint8 and len(names) == 10
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)
    assert a.std() > 20, "real photo texture, not flat colour"


def test_train_and_test_crops_come_from_disjoint_regions():
    photo = np.zeros((400, 300, 3), np.uint8)
    photo[int(400 * 0.7):] = 200  # the test region is bright, the train region black
    digits = np.zeros((50, 28, 28), np.uint8)
    rng = np.random.default_rng(0)
    train = composite(digits, [photo], 64, train=True, rng=rng)
    test = composite(digits, [photo], 64, train=False, rng=rng)
    assert train.max() == 0 and test.min() == 200


def test_digit_is_blended_as_absolute_difference():
    photo = np.full((300, 300, 3), 100, np.uint8)
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 10:18, 10:18] = 255
    out = composite(digit, [photo], 28, train=True, rng=np.random.default_rng(0))[0]
    assert out[14, 14].tolist() == [155, 155, 155] and out[0, 0].tolist() == [100, 100, 100]


def test_composites_do_not_depend_on_opencv_doc_being_installed(tmp_path, monkeypatch):
    """The same ingest on a machine with Debian's opencv-doc photos (the scenes source's extra
    backgrounds) gives the same mnist-m images: its photos come from the pinned packages only."""
    import nice.data.mnistm as mnistm
    from PIL import Image

    before, _, _ = make_mnistm("test", 32, limit=40, seed=0)
    noise = np.random.default_rng(0).integers(0, 256, (400, 500, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "extra.jpg")
    monkeypatch.setattr(mnistm, "OPENCV_DIR", tmp_path)
    assert "opencv:extra" in [name for name, _ in mnistm.offline_photos()]  # scenes would use it
    after, _, _ = make_mnistm("test", 32, limit=40, seed=0)
    assert np.array_equal(before, after)
