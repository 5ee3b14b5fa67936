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
    assert not torch.allclose(m(x, t, torch.zeros(7, dtype=torch.long)), m(x, t, torch.ones(7, dtype=torch.long)))


def test_mixed_batch_equals_row_by_row():
    """Embeddings are computed once per distinct (t, y): the answer must not depend on the batch."""
    torch.manual_seed(1)
    m = MLPDenoiser(dim=2, T=20, hidden=16, depth=2, num_classes=2)
    x, t, y = torch.randn(9, 2), torch.randint(0, 20, (9,)), torch.randint(0, 3, (9,))
    full = m(x, t, y)
    rows = torch.cat([m(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(9)])
    assert torch.allclose(full, rows, atol=1e-6)


def test_unconditional_model_refuses_labels():
    m = MLPDenoiser(dim=2, T=10, hidden=8, depth=2)
    with pytest.raises(ValueError, match="y"):
        m(torch.randn(2, 2), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long))


def test_bad_input():
    m = MLPDenoiser(dim=2, T=10, hidden=8, depth=2, num_classes=3)
    x, t = torch.randn(4, 2), torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="x_t"):
        m(torch.randn(4, 3), t)
    with pytest.raises(TypeError, match="dtype"):
        m(x.double(), t)
    with pytest.raises(ValueError, match="t"):
        m(x, torch.full((4,), 10))
    with pytest.raises(ValueError, match="t"):
        m(x, torch.zeros(4))
    with pytest.raises(ValueError, match="y"):
        m(x, t, torch.tensor([0, 1, 2, 4]))
    with pytest.raises(ValueError, match="y"):
        m(x, t, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(TypeError, match="y"):
        m(x, t, torch.zeros(4))
    with pytest.raises(ValueError, match="y"):
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
    assert torch.allclose(torch.logsumexp(torch.log_softmax(logits, 1), 1), torch.zeros(5), atol=1e-6)
    with pytest.raises(ValueError, match="y"):
        clf.log_prob(x, torch.zeros(5, dtype=torch.long), torch.tensor([0, 1, 3, 0, 1]))   # no null label here
    with pytest.raises(TypeError, match="y"):
        clf.log_prob(x, torch.zeros(5, dtype=torch.long), None)
    with pytest.raises(ValueError, match="t"):
        clf(x, torch.full((5,), 30))
    with pytest.raises(ValueError, match="x_t"):
        clf(torch.randn(5, 3), torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_classes"):
        MLPClassifier(num_classes=1)
