import pytest
import torch

from diffcourse.data import three_blobs, two_moons


def test_shapes_and_classes():
    b, m = three_blobs(), two_moons()
    assert (b.num_classes, b.dim, b.num_components) == (3, 2, 3)
    assert (m.num_classes, m.dim, m.num_components) == (2, 2, 32)
    assert three_blobs(dtype=torch.float64).dtype == torch.float64
    # both sets are centred near the origin with a spread near one, as the unit-variance noise expects
    for mix in (b, m):
        x, _ = mix.sample(20000, generator=torch.Generator().manual_seed(0))
        assert x.mean(0).abs().max() < 0.3 and 0.3 < x.std(0).min() and x.std(0).max() < 1.5


def test_bad_input():
    with pytest.raises(ValueError, match="std"):
        three_blobs(std=0)
    with pytest.raises(ValueError, match="components"):
        two_moons(components=0)


# ---- images ------------------------------------------------------------------------------------------

import gzip  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402

from diffcourse.data import load_digits_split, load_mnist, read_idx  # noqa: E402


def test_digits_split_is_seeded_scaled_and_disjoint():
    a, b = load_digits_split(seed=0), load_digits_split(seed=0)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert a.x_train.shape[1:] == (1, 8, 8) and len(a.y_train) + len(a.y_test) == 1797
    assert len(a.y_test) == round(0.25 * 1797)
    assert a.x_train.min() == -1 and a.x_train.max() == 1
    assert set(a.y_train.tolist()) == set(range(10))
    # no image of the held-out part is in the training part (the digits set has no duplicates)
    train = {tuple(v.flatten().tolist()) for v in a.x_train}
    assert not any(tuple(v.flatten().tolist()) in train for v in a.x_test)
    assert not torch.equal(load_digits_split(seed=1).y_test, a.y_test)
    with pytest.raises(ValueError, match="holdout"):
        load_digits_split(holdout=1.0)


def write_idx(path, array: np.ndarray, code: int, compress: bool = False) -> None:
    """An IDX file written by hand: header, big-endian dimensions, big-endian values."""
    raw = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}i", *array.shape)
    raw += array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_idx_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28)).astype(np.uint8)
    floats = rng.normal(size=(3, 4)).astype(np.float32)
    write_idx(tmp_path / "u8", images, 0x08)
    write_idx(tmp_path / "f4.gz", floats, 0x0D, compress=True)
    assert torch.equal(read_idx(tmp_path / "u8"), torch.from_numpy(images))
    assert torch.equal(read_idx(tmp_path / "f4.gz"), torch.from_numpy(floats))


def test_mnist_folder(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 28, 28)).astype(np.uint8)
    labels = np.array([0, 9, 3, 3, 1, 7], dtype=np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images, 0x08, compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, 0x08)
    x, y = load_mnist(tmp_path, split="test")
    assert x.shape == (6, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    assert torch.allclose(x[:, 0], torch.from_numpy(images).float() / 127.5 - 1)
    assert y.tolist() == labels.tolist() and y.dtype == torch.long
    with pytest.raises(FileNotFoundError, match="train-images"):
        load_mnist(tmp_path, split="train")
    with pytest.raises(ValueError, match="split"):
        load_mnist(tmp_path, split="val")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels[:5], 0x08)  # one label short
    with pytest.raises(ValueError, match="do not match"):
        load_mnist(tmp_path, split="test")


def test_bad_idx_files_are_refused(tmp_path):
    write_idx(tmp_path / "ok", np.zeros((4, 3), dtype=np.uint8), 0x08)
    raw = (tmp_path / "ok").read_bytes()
    (tmp_path / "short").write_bytes(raw[:-1])
    with pytest.raises(ValueError, match="short.*truncated"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(raw + b"\0")
    with pytest.raises(ValueError, match="long"):
        read_idx(tmp_path / "long")
    (tmp_path / "header").write_bytes(raw[:6])
    with pytest.raises(ValueError, match="header"):
        read_idx(tmp_path / "header")
    (tmp_path / "magic").write_bytes(b"\x01" + raw[1:])
    with pytest.raises(ValueError, match="IDX header"):
        read_idx(tmp_path / "magic")
    (tmp_path / "bad.gz").write_bytes(raw)  # not gzip at all
    with pytest.raises(ValueError, match="gzip"):
        read_idx(tmp_path / "bad.gz")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")
