import pytest
import torch

from diffcourse.models import MLPDenoiser


def test_shapes_and_null_label():
    torch.manual_seed(0)
    m = MLPDenoiser(dim=3, T=50, hidden=32, depth=3, num_classes=4)
    x, t = torch.randn(7, 3), torch.randint(0, 50, (7,))
    assert m(x, t, torch.randint(0, 4, (7,))).shape == (7, 3)
    assert m.null_label == 4
    # y=None means the null label for every row
    assert torch.equal(m(x, t), m(x, t, torch.full((7,), 4)))
    # the label changes the answer
    assert not torch.allclose(
        m(x, t, torch.zeros(7, dtype=torch.long)), m(x, t, torch.ones(7, dtype=torch.long))
    )


def test_mixed_batch_equals_row_by_row():
    """Embeddings are computed once per distinct (t, y): the answer must not depend on the batch."""
    torch.manual_seed(1)
    m = MLPDenoiser(dim=2, T=20, hidden=16, depth=2, num_classes=2)
    x, t, y = torch.randn(9, 2), torch.randint(0, 20, (9,)), torch.randint(0, 3, (9,))
    full = m(x, t, y)
    rows = torch.cat([m(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(9)])
    assert torch.allclose(full, rows, atol=1e-6)


def test_unconditional_model_refuses_labels():
    m = MLPDenoiser(dim=2, T=10, hidden=8, depth=2)
    with pytest.raises(ValueError, match="^y was given"):
        m(torch.randn(2, 2), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_bad_input():
    m = MLPDenoiser(dim=2, T=10, hidden=8, depth=2, num_classes=3)
    x, t = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="x_t"):
        m(torch.randn(4, 3), t)
    with pytest.raises(TypeError, match="dtype"):
        m(x.double(), t)
    with pytest.raises(ValueError, match="^t must lie in"):
        m(x, torch.full((4,), 10))
    # a float tensor of steps: the wrong type
    with pytest.raises(TypeError, match="^t must be a LongTensor"):
        m(x, torch.zeros(4))
    with pytest.raises(ValueError, match="^y must lie in"):
        m(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="^y must lie in"):
        m(x, t, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        m(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match="^y must have shape"):
        m(x, t, torch.zeros(3, dtype=torch.long))


def test_classifier_shapes_time_input_and_bad_input():
    from diffcourse.models import MLPClassifier

    torch.manual_seed(0)
    clf = MLPClassifier(dim=2, T=30, num_classes=3, hidden=16, depth=2)
    x = torch.randn(5, 2)
    logits = clf(x, torch.zeros(5, dtype=torch.long))
    assert logits.shape == (5, 3)
    # the time input matters
    assert not torch.allclose(logits, clf(x, torch.full((5,), 29)))
    lp = clf.log_prob(x, torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 2, 0, 1]))
    assert lp.shape == (5,) and (lp <= 0).all()
    assert torch.allclose(
        torch.logsumexp(torch.log_softmax(logits, 1), 1), torch.zeros(5), atol=1e-6
    )
    with pytest.raises(ValueError, match="^y must lie in"):
        clf.log_prob(
            x, torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 3, 0, 1])
        )  # no null label here
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        clf.log_prob(x, torch.zeros(5, dtype=torch.long), None)
    with pytest.raises(ValueError, match="^t must lie in"):
        clf(x, torch.full((5,), 30))
    with pytest.raises(ValueError, match="x_t"):
        clf(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        MLPClassifier(num_classes=1)


# ---- images ------------------------------------------------------------------------------------------

from diffcourse.models import ConvClassifier, UNet  # noqa: E402


def test_unet_shapes_and_null_label():
    torch.manual_seed(0)
    m = UNet(channels=1, size=8, T=50, num_classes=10, width=8)
    x, t = torch.randn(5, 1, 8, 8), torch.randint(0, 50, (5,))
    assert m(x, t, torch.randint(0, 10, (5,))).shape == (5, 1, 8, 8)
    assert m.null_label == 10
    assert torch.equal(m(x, t), m(x, t, torch.full((5,), 10)))  # None = the null label
    assert not torch.allclose(
        m(x, t, torch.zeros(5, dtype=torch.long)), m(x, t, torch.ones(5, dtype=torch.long))
    )
    # three levels on 28x28 (MNIST), RGB, unconditional
    big = UNet(channels=3, size=28, T=50, width=8, mults=(1, 2, 2))
    assert big(torch.randn(2, 3, 28, 28), torch.tensor([0, 49])).shape == (2, 3, 28, 28)


@pytest.mark.parametrize("width, count", [(32, 395_649), (64, 1_573_633)])
def test_unet_parameter_counts_are_the_ones_chapter_7_states(width, count):
    """book/07 quotes the digit U-Net's size at the quick (width 32) and full (width 64) budget."""
    net = UNet(channels=1, size=8, T=1000, num_classes=10, width=width)
    assert sum(p.numel() for p in net.parameters()) == count


def test_unet_rows_are_independent():
    """GroupNorm normalises each image on its own: a row's answer must not depend on the batch."""
    torch.manual_seed(1)
    m = UNet(size=8, T=20, num_classes=3, width=8)
    x, t, y = torch.randn(6, 1, 8, 8), torch.randint(0, 20, (6,)), torch.randint(0, 4, (6,))
    rows = torch.cat([m(x[i : i + 1], t[i : i + 1], y[i : i + 1]) for i in range(6)])
    assert torch.allclose(m(x, t, y), rows, atol=1e-5)


def test_unet_bad_input():
    m = UNet(size=8, T=10, num_classes=2, width=8)
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    with pytest.raises(ValueError, match="x_t"):
        m(torch.randn(2, 1, 7, 7), t)
    with pytest.raises(TypeError, match="dtype"):
        m(x.double(), t)
    with pytest.raises(ValueError, match="t must lie"):
        m(x, torch.full((2,), 10))
    with pytest.raises(ValueError, match="y must lie"):
        m(x, t, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="unconditional"):
        UNet(size=8, T=10, width=8)(x, t, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="divisible"):
        UNet(size=10, width=8, mults=(1, 2, 2))


def test_conv_classifier():
    torch.manual_seed(2)
    noisy, clean = (
        ConvClassifier(T=100, width=8, features=16),
        ConvClassifier(T=None, width=8, features=16),
    )
    x, t, y = torch.randn(4, 1, 8, 8), torch.randint(0, 100, (4,)), torch.tensor([0, 3, 9, 2])
    assert noisy(x, t).shape == (4, 10) and noisy.features(x, t).shape == (4, 16)
    assert clean(x).shape == (4, 10)
    assert torch.allclose(
        noisy.log_prob(x, t, y).exp(), torch.softmax(noisy(x, t), 1)[torch.arange(4), y]
    )
    assert not torch.allclose(noisy(x, t), noisy(x, (t + 50) % 100))  # it reads t
    with pytest.raises(TypeError, match="t must be"):
        noisy(x)
    with pytest.raises(ValueError, match="clean images only"):
        clean(x, t + 1)
    with pytest.raises(ValueError, match="y must lie"):
        noisy.log_prob(x, t, torch.tensor([0, 1, 2, 10]))  # the null label is no class
    with pytest.raises(ValueError, match="num_classes"):
        ConvClassifier(num_classes=1)


def test_the_null_label_is_one_spelling():
    cond = MLPDenoiser(dim=2, T=10, hidden=8, depth=1, num_classes=3)
    assert cond.null_label == 3 and cond.null_labels(4).tolist() == [3, 3, 3, 3]
    x, t = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    assert torch.equal(
        cond(x, t, None), cond(x, t, cond.null_labels(4))
    )  # None means the null label
    unet = UNet(size=8, T=10, num_classes=10, width=8)
    assert unet.null_label == 10 and unet.null_labels(2).dtype == torch.long
    uncond = MLPDenoiser(dim=2, T=10, hidden=8, depth=1)
    assert uncond.null_label is None
    with pytest.raises(ValueError, match="null_labels"):
        uncond.null_labels(2)


# ---- bad input (issue 17): sizes torch cannot build are named before torch fails -------------------------


def test_unsupported_widths_and_embedding_sizes_are_named():
    """A U-Net's GroupNorm needs every level's channels, and twice them on the way up (the skip is
    concatenated), below 8 or a multiple of 8: width 3 (12 channels up) failed inside GroupNorm."""
    x, t = torch.randn(2, 1, 8, 8), torch.zeros(2, dtype=torch.long)
    for width in (3, 12, 20):
        with pytest.raises(ValueError, match="^width \\* mults"):
            UNet(T=10, width=width)
    assert UNet(T=10, width=4)(x, t).shape == x.shape  # 4, 8 down; 8, 16 up
    ConvClassifier(T=10, width=3)  # no skips: 3 and 6 channels are fine
    for emb_dim, error in ((0, ValueError), (3, ValueError), (2.0, TypeError)):
        with pytest.raises(error, match="^emb_dim"):
            MLPDenoiser(dim=2, T=10, hidden=8, depth=1, emb_dim=emb_dim)
    from diffcourse.models import ResBlock  # found by fuzzing: c_in = 0 was a ZeroDivisionError

    for args, error, name in (((0, 8, 4), ValueError, "c_in"), ((8, 2.0, 4), TypeError, "c_out")):
        with pytest.raises(error, match=f"^{name}"):
            ResBlock(*args)


def test_the_time_embedding_and_a_flat_eps_fns_label_are_checked():
    """Found by fuzzing: T = 0 gave NaN features, an odd dim one feature short; a label of 2.7 or
    True was read as class 2 or 1."""
    from diffcourse.models import flat_eps_fn, timestep_embedding

    t = torch.arange(4)
    assert timestep_embedding(t, 4, 10).shape == (4, 4)
    with pytest.raises(ValueError, match="^T must be an int >= 1"):
        timestep_embedding(t, 4, 0)
    with pytest.raises(ValueError, match="^dim must be even"):
        timestep_embedding(t, 3, 10)
    unet = UNet(channels=1, size=8, T=10, num_classes=3, width=8)
    for y, error in ((2.7, TypeError), (True, TypeError), (3, ValueError), (-1, ValueError)):
        with pytest.raises(error, match="^y "):
            flat_eps_fn(unet, y)
    assert flat_eps_fn(unet, 2)(torch.randn(2, 64), torch.tensor([3, 3])).shape == (2, 64)
