"""Denoisers with a caption or a low-resolution image as their condition (chapter 10)."""

import pytest
import torch

from diffcourse.conditioned import CaptionUNet, SuperResUNet, low_resolution
from diffcourse.text import MAX_TOKENS, tokenize


@pytest.fixture
def caption_model():
    torch.manual_seed(0)
    model = CaptionUNet(T=50, width=8, text_dim=16, text_layers=1)
    for block in model.attn:  # give cross-attention a use (it starts at zero)
        torch.nn.init.normal_(block.out.weight, std=0.5)
    return model.eval()


def test_caption_model_reads_its_caption_and_ignores_padding(caption_model):
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 40])
    caps = ["seven", "an odd digit below four"]
    out = caption_model(x, t, tokenize(caps))
    assert out.shape == x.shape
    assert torch.allclose(caption_model(x, t, tokenize(caps, length=8)), out, atol=1e-5)
    assert not torch.allclose(
        caption_model(x, t, tokenize(["three", "an even digit"])), out, atol=1e-3
    )
    null = caption_model.null_condition(tokenize(caps))
    assert torch.equal(null, tokenize(["", ""]))


def test_caption_model_cross_attention_reads_each_token(caption_model, monkeypatch):
    """Two contexts with the same mean token feature reach the network only through cross-attention
    (the time embedding sees that mean): the outputs differ with the blocks in place, and agree once
    the blocks are set to zero, so the difference is theirs."""
    x, t = torch.randn(1, 1, 8, 8).expand(2, -1, -1, -1), torch.tensor([3, 3])
    tokens = tokenize(["not a seven", "not a seven"])
    context, mask = caption_model.text(tokens)
    keep = mask.to(context.dtype)[1, :, None]  # the real tokens of row 1
    delta = torch.randn(context.shape[1:], generator=torch.Generator().manual_seed(0)) * keep
    delta -= keep * delta.sum(0) / keep.sum()  # spread the tokens apart, mean unchanged
    context = torch.stack([context[0], context[1] + delta]).detach()
    monkeypatch.setattr(caption_model.text, "forward", lambda tok: (context, mask))
    out = caption_model(x, t, tokens)
    assert (out[0] - out[1]).abs().max() > 1e-3
    for block in caption_model.attn:
        torch.nn.init.zeros_(block.out.weight)
    out = caption_model(x, t, tokens)
    assert (out[0] - out[1]).abs().max() < 1e-5


def test_caption_model_bad_input(caption_model):
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 4])
    with pytest.raises(TypeError, match="tokens"):
        caption_model(x, t, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="tokens"):
        caption_model(x, t, tokenize(["seven"]))
    with pytest.raises(ValueError, match=str(MAX_TOKENS)):
        caption_model(x, t, torch.ones(2, MAX_TOKENS + 1, dtype=torch.long))


def test_super_resolution_model_uses_its_condition():
    torch.manual_seed(0)
    model = SuperResUNet(T=50, width=8).eval()
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 10, 49])
    low = low_resolution(torch.rand(3, 1, 8, 8) * 2 - 1)
    out = model(x, t, low)
    assert out.shape == x.shape
    assert not torch.allclose(
        model(x, t, low.flip(0)), out, atol=1e-4
    )  # the condition changes the output
    assert not torch.allclose(model(x, t, model.null_condition(low)), out, atol=1e-4)
    assert torch.equal(model.null_condition(low), torch.zeros(3, 1, 4, 4))


def test_super_resolution_condition_of_the_wrong_size_names_the_expected_size():
    model = SuperResUNet(T=50, width=8)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"low .*\[N, 1, 4, 4\].*\(2, 1, 8, 8\)"):
        model(x, t, torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="rows"):
        model(x, t, torch.zeros(3, 1, 4, 4))
    with pytest.raises(ValueError, match="factor"):
        SuperResUNet(size=8, factor=3)
    with pytest.raises(TypeError, match="^factor must be an int"):
        SuperResUNet(size=8, factor=2.0)


def test_low_resolution_is_the_block_mean():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert torch.equal(low_resolution(x), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]))
    with pytest.raises(ValueError, match="factor"):
        low_resolution(x, 3)
    with pytest.raises(ValueError, match="^x must have 4 dimensions"):
        low_resolution(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="^x must be a torch.Tensor"):  # not a ValueError
        low_resolution(x.tolist())


# ---- sampling and measuring ------------------------------------------------------------------------------
from diffcourse.conditioned import guided_sample, superres_metrics  # noqa: E402
from diffcourse.guidance import classifier_free_eps_fn  # noqa: E402
from diffcourse.samplers import ddim_sample  # noqa: E402
from diffcourse.schedules import linear_schedule  # noqa: E402


def test_guided_sample_is_eq170_or_a_negative_prompt(caption_model):
    schedule = linear_schedule(50)
    x_T = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    cond, neg = tokenize(["seven", "two"]), tokenize(["three", "three"])
    m = caption_model
    with torch.no_grad():
        want = ddim_sample(
            classifier_free_eps_fn(m.eps_fn(cond), m.eps_fn(m.null_condition(cond)), 2.5),
            x_T,
            schedule,
            steps=5,
            progress=False,
        ).clamp(-1, 1)
        assert torch.equal(guided_sample(m, cond, 2.5, x_T, schedule, 5), want)
        want = ddim_sample(
            classifier_free_eps_fn(m.eps_fn(cond), m.eps_fn(neg), 2.5),
            x_T,
            schedule,
            steps=5,
            progress=False,
        ).clamp(-1, 1)
        assert torch.equal(guided_sample(m, cond, 2.5, x_T, schedule, 5, negative=neg), want)
    with pytest.raises(ValueError, match="^schedule has T=40 but the model was built for T=50"):
        guided_sample(m, cond, 2.5, x_T, linear_schedule(40), 5)


class _Reader(torch.nn.Module):
    """A 'judge' that reads every image as the digit of its mean pixel's sign: 1 if bright, else 0."""

    def forward(self, x):
        bright = (x.flatten(1).mean(1) > 0).long()
        return torch.nn.functional.one_hot(bright, 10).float()


def test_superres_metrics_on_the_sources_themselves():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 1, 8, 8, generator=g) * 2 - 1
    labels = (x.flatten(1).mean(1) > 0).long()
    group = torch.tensor([0, 0, 1, 1, 2, 2])
    m = superres_metrics(_Reader(), x, low_resolution(x), labels, group, x, labels)
    assert m["consistency"] == 0 and m["agreement"] == 1
    noisy = superres_metrics(_Reader(), x, low_resolution(x) + 0.1, labels, group, x, labels)
    assert abs(noisy["consistency"] - 0.1) < 1e-6
    with pytest.raises(ValueError, match="low"):
        superres_metrics(_Reader(), x, low_resolution(x)[:3], labels, group, x, labels)
    # a condition of width 0 divided by zero before the check could name it
    with pytest.raises(ValueError, match="^low must be x downsampled by a whole factor"):
        superres_metrics(_Reader(), x, torch.zeros(6, 1, 4, 0), labels, group, x, labels)
    with pytest.raises(TypeError, match="^low must be a torch.Tensor"):
        superres_metrics(_Reader(), x, low_resolution(x).tolist(), labels, group, x, labels)


def test_low_resolution_factor_is_an_int():
    with pytest.raises(TypeError, match="^factor must be an int"):
        low_resolution(torch.randn(2, 1, 8, 8), 2.0)
    with pytest.raises(ValueError, match="^factor must be an int >= 1"):
        low_resolution(torch.randn(2, 1, 8, 8), 0)


def test_superres_metrics_refuse_a_nan_condition():
    """A NaN entry of low made the consistency NaN, silently."""
    from diffcourse.conditioned import superres_metrics
    from diffcourse.models import ConvClassifier

    judge = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=None)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    y, low = torch.arange(4), low_resolution(x, 2)
    low[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="^low holds NaN"):
        superres_metrics(judge, x, low, y, y % 2, x, y % 2)
