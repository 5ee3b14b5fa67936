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
    packed = bytearray(gzip.compress(bytes(range(256)) * 64))
    packed[20:40] = bytes(20)  # a gzip header with a damaged stream behind it (zlib.error)
    (tmp_path / "damaged.gz").write_bytes(bytes(packed))
    with pytest.raises(ValueError, match="damaged.gz.*gzip"):
        read_idx(tmp_path / "damaged.gz")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_idx(tmp_path / "missing")


# ---- chapter 7's sets for the image metrics: balanced rows, a floor set the judge never sees -------------

from diffcourse.data import balanced_rows, digits_eval_sets  # noqa: E402


def test_balanced_rows_hold_equal_class_counts_and_are_seeded():
    y = torch.tensor([0] * 7 + [1] * 3 + [2] * 5)
    rows = balanced_rows(y, 3, seed=4)
    assert rows.shape == (9,) and torch.equal(y[rows], torch.tensor([0] * 3 + [1] * 3 + [2] * 3))
    assert rows.unique().numel() == 9  # no row twice
    assert torch.equal(rows, balanced_rows(y, 3, seed=4))
    assert any(not torch.equal(balanced_rows(y, 3, seed=s), rows) for s in range(5, 10))
    with pytest.raises(ValueError, match="per_class"):
        balanced_rows(y, 4)  # class 1 has only 3 rows
    with pytest.raises(TypeError, match="^y must be an integer"):
        balanced_rows(y.float(), 2)
    with pytest.raises(ValueError, match="^y must hold labels"):
        balanced_rows(torch.tensor([0, -1, 1]), 1)
    with pytest.raises(TypeError, match="per_class"):
        balanced_rows(y, 2.0)


def test_digits_eval_sets_split_the_training_digits_and_balance_the_reference():
    split, sets = load_digits_split(), digits_eval_sets(floor_per_class=50)
    assert torch.equal(torch.bincount(sets.y_floor), torch.full((10,), 50))
    counts = torch.bincount(sets.y_ref)
    assert torch.equal(counts, torch.full((10,), int(torch.bincount(split.y_test).min())))
    # the judge's set and the floor set are the training split, disjoint
    assert len(sets.y_judge) + len(sets.y_floor) == len(split.y_train)
    flat = lambda x: {tuple(v.tolist()) for v in x.flatten(1)}  # noqa: E731 (the digits have no duplicates)
    assert not flat(sets.x_judge) & flat(sets.x_floor)
    assert flat(sets.x_judge) | flat(sets.x_floor) == flat(split.x_train)
    assert flat(sets.x_ref) <= flat(split.x_test)
    again = digits_eval_sets(floor_per_class=50)
    assert torch.equal(again.x_floor, sets.x_floor) and torch.equal(again.x_ref, sets.x_ref)
    with pytest.raises(ValueError, match="per_class"):
        digits_eval_sets(floor_per_class=500)


def test_the_digit_sets_move_to_a_device_whole():
    split, sets = load_digits_split(), digits_eval_sets()
    for before in (split, sets):
        after = before.to("meta")  # a device with no data: every tensor must have moved
        assert type(after) is type(before) and after._fields == before._fields
        assert all(v.device.type == "meta" and v.shape == w.shape for v, w in zip(after, before))
        assert all(torch.equal(v, w) for v, w in zip(before.to(torch.device("cpu")), before))
        with pytest.raises(ValueError, match="device"):
            before.to("nowhere")


# ---- chapter 10: two attributes --------------------------------------------------------------------------
from diffcourse.data import attribute_grid  # noqa: E402


@pytest.mark.parametrize("colour", ["rows", "diagonal"])
def test_attribute_grid_labels(colour):
    A = attribute_grid(size=3, colour=colour)
    assert (A.position.num_classes, A.colour.num_classes, A.joint.num_classes) == (3, 3, 9)
    assert all(
        torch.equal(m.means, A.joint.means) and torch.equal(m.weights, A.joint.weights) for m in A
    )
    # every (position, colour) pair names exactly one component, whose labels agree with the pair
    for k in range(9):
        p, c = int(A.position.labels[k]), int(A.colour.labels[k])
        assert int(A.joint.labels[k]) == A.pair(p, c)
    assert torch.bincount(A.joint.labels).tolist() == [1] * 9
    # position is the column (first coordinate); with rows, colour is the row
    assert torch.equal(A.position.labels, (A.joint.means[:, 0].argsort().argsort() // 3))
    if colour == "rows":
        rank = torch.unique(A.joint.means[:, 1], return_inverse=True)[1]
        assert torch.equal(A.colour.labels, rank)


def test_attribute_grid_bad_input():
    with pytest.raises(ValueError, match="colour"):
        attribute_grid(colour="stripes")
    with pytest.raises(ValueError, match="size"):
        attribute_grid(size=1)
    with pytest.raises(ValueError, match="std"):
        attribute_grid(std=0.0)
    with pytest.raises(ValueError, match="position"):
        attribute_grid().pair(3, 0)
    with pytest.raises(TypeError, match="colour"):
        attribute_grid().pair(0, 1.0)


def test_attribute_grid_subset():
    A = attribute_grid(colour="rows")
    meant = A.subset([A.pair(0, 0), A.pair(0, 1)])  # left, not blue
    assert meant.num_components == 2 and meant.num_classes == 1
    assert torch.allclose(meant.means, A.joint.means[[A.pair(0, 0), A.pair(0, 1)]])
    assert torch.allclose(meant.weights, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="pairs"):
        A.subset([9])
    with pytest.raises(ValueError, match="pairs"):
        A.subset([])


# ---- the digits as an exact mixture (chapter 12) ------------------------------------------------------

from diffcourse.data import digits_mixture  # noqa: E402


def test_digits_mixture_shape_classes_and_weights():
    m = digits_mixture()
    assert (m.dim, m.num_classes, m.num_components) == (64, 10, 20) and m.dtype == torch.float32
    assert torch.equal(m.labels, torch.arange(10).repeat_interleave(2))
    split = load_digits_split()
    freq = torch.bincount(split.y_train, minlength=10).double() / len(split.y_train)
    assert torch.allclose(
        m.class_weights.double(), freq, atol=1e-6
    )  # p(y) = the data's class shares
    assert digits_mixture(components=1, dtype=torch.float64).num_components == 10


def test_digits_mixture_score_is_the_gradient_of_its_log_density():
    """The closed-form score against autograd of log p(x) and log p(x|y), in float64, at the clean level
    and at a noisy one, on draws and on held-out digits."""
    m = digits_mixture(dtype=torch.float64)
    split = load_digits_split()
    x = torch.cat(
        [
            m.sample(40, generator=torch.Generator().manual_seed(0))[0],
            split.x_test[:40].reshape(40, -1).double(),
        ]
    )
    for law in (m, m.diffuse(0.3)):
        for y in (None, 7):
            xg = x.clone().requires_grad_(True)
            (auto,) = torch.autograd.grad(law.log_prob(xg, y).sum(), xg)
            exact = law.score(x, y)
            assert ((exact - auto).abs().max() / auto.abs().max()).item() < 1e-9


def test_digits_mixture_is_digit_like():
    """Its exact Bayes classifier labels held-out real digits correctly, and its draws cover the
    pixel range of the images: a mixture, not a caricature, of the digits."""
    m = digits_mixture()
    split = load_digits_split()
    acc = (
        (
            m.class_log_posterior(split.x_test.reshape(len(split.y_test), -1)).argmax(1)
            == split.y_test
        )
        .double()
        .mean()
    )
    assert acc > 0.97
    x, _ = m.sample(4000, generator=torch.Generator().manual_seed(1))
    assert -1.3 < x.mean() < -0.2 and (x.quantile(0.01) < -1) and (x.quantile(0.99) > 0.9)


def test_digits_mixture_bad_input():
    with pytest.raises(ValueError, match="components"):
        digits_mixture(components=0)
    with pytest.raises(ValueError, match="reg_covar"):
        digits_mixture(reg_covar=0.0)
    with pytest.raises(TypeError, match="^reg_covar must be a real number"):
        digits_mixture(reg_covar="1e-3")
    for wrong in (torch.long, torch.float16):  # float16 fails in the Cholesky factors
        with pytest.raises(TypeError, match="^dtype must be torch.float32 or torch.float64"):
            digits_mixture(dtype=wrong)
    with pytest.raises(ValueError, match="holdout"):
        digits_mixture(holdout=1.5)
    # before the cached fit, whose cache would say only "unhashable type: 'list'"
    with pytest.raises(TypeError, match="^holdout must be a real number"):
        digits_mixture(holdout=[0.25])
    with pytest.raises(TypeError, match="^seed must be an int"):
        digits_mixture(seed=[0])
    with pytest.raises(TypeError, match="^components must be an int"):  # not a ValueError
        digits_mixture(components="2")


def test_round_mixture_std_is_a_positive_number():
    from diffcourse.data import round_mixture

    with pytest.raises(TypeError, match="^std must be a real number"):
        round_mixture([[0.0, 0.0]], "1", [0])
    with pytest.raises(ValueError, match="^std must be"):
        round_mixture([[0.0, 0.0]], 0.0, [0])
