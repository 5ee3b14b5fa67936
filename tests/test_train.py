import pytest
import torch

from diffcourse.data import three_blobs
from diffcourse.models import MLPDenoiser
from diffcourse.schedules import cosine_schedule
from diffcourse.train import train_denoiser


def _model(num_classes=0):
    torch.manual_seed(0)
    return MLPDenoiser(dim=2, T=50, hidden=32, depth=2, num_classes=num_classes)


def test_loss_falls_and_is_seeded():
    s = cosine_schedule(50)
    a = train_denoiser(_model(), three_blobs(), s, steps=300, batch_size=256, progress=False)
    b = train_denoiser(_model(), three_blobs(), s, steps=300, batch_size=256, progress=False)
    assert a == b
    first, last = sum(a[:30]) / 30, sum(a[-30:]) / 30
    assert last < 0.8 * first, (first, last)


def test_tensor_data_and_condition_dropout():
    s = cosine_schedule(50)
    x, y = three_blobs().sample(500, generator=torch.Generator().manual_seed(0))
    m = _model(num_classes=3)
    losses = train_denoiser(m, (x, y), s, steps=20, batch_size=64, p_uncond=0.2, progress=False)
    assert len(losses) == 20 and all(l == l for l in losses)
    train_denoiser(_model(), x, s, steps=5, batch_size=16, progress=False)


def test_bad_input():
    s = cosine_schedule(50)
    with pytest.raises(ValueError, match="steps"):
        train_denoiser(_model(), three_blobs(), s, steps=0)
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(3), three_blobs(), s, steps=1, p_uncond=1.5)
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(), three_blobs(), s, steps=1, p_uncond=0.1)
    with pytest.raises(ValueError, match="T"):
        train_denoiser(_model(), three_blobs(), cosine_schedule(40), steps=1)
    with pytest.raises(ValueError, match="conditional"):
        train_denoiser(_model(3), torch.randn(10, 2), s, steps=1, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        train_denoiser(_model(), three_blobs(), s, steps=1, batch_size=0)


def test_classifier_learns_separated_blobs():
    from diffcourse.models import MLPClassifier
    from diffcourse.train import train_classifier
    s = cosine_schedule(50)
    torch.manual_seed(0)
    clf = MLPClassifier(dim=2, T=50, num_classes=3, hidden=32, depth=2)
    mix = three_blobs(radius=3.0, std=0.3)
    losses = train_classifier(clf, mix, s, steps=200, batch_size=256, lr=3e-3, progress=False)
    assert sum(losses[-20:]) / 20 < 0.6 * sum(losses[:20]) / 20
    x, y = mix.sample(500, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        acc = (clf(x, torch.zeros(500, dtype=torch.long)).argmax(1) == y).float().mean().item()
    assert acc > 0.95
    with pytest.raises(ValueError, match="labelled"):
        train_classifier(clf, torch.randn(10, 2), s, steps=1, progress=False)


def test_condition_dropout_default_trains_the_null_row():
    s = cosine_schedule(50)
    for p_uncond, should_move in ((None, True), (0.0, False)):
        torch.manual_seed(0)
        m = _model(num_classes=3)
        before = m.label_emb.weight[3].clone()
        train_denoiser(m, three_blobs(), s, steps=20, batch_size=64, p_uncond=p_uncond, progress=False)
        moved = not torch.equal(before, m.label_emb.weight[3])
        assert moved == should_move, p_uncond
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(num_classes=3), three_blobs(), s, steps=1, p_uncond=1.5, progress=False)
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(num_classes=3), three_blobs(), s, steps=1, p_uncond=True, progress=False)
    with pytest.raises(ValueError, match="p_uncond"):
        train_denoiser(_model(), three_blobs(), s, steps=1, p_uncond=0.2, progress=False)
