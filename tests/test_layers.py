"""diffcourse.layers: each layer is its torch.nn namesake (to float rounding), and its weights'
gradients come out bit for bit the same at 1, 2 and 4 CPU threads, where the namesake's may not."""

from functools import partial

import pytest
import torch
from conftest import torch_threads
from torch import nn

from diffcourse import layers


def _at_threads(threads: int, fn):
    with torch_threads(threads):
        return fn()


CASES = {  # each layer, built as the U-Nets and chapter 10's encoder build it, and its input
    "conv 3x3": (partial(layers.Conv2d, 32, 32, 3, padding=1), (128, 32, 8, 8)),
    "conv stride 2": (partial(layers.Conv2d, 32, 16, 3, stride=2, padding=1), (64, 32, 8, 8)),
    "conv 1x1, no bias": (partial(layers.Conv2d, 24, 8, 1, bias=False), (64, 24, 4, 4)),
    "conv to 1 channel": (partial(layers.Conv2d, 32, 1, 3, padding=1), (128, 32, 8, 8)),
    "linear on tokens": (partial(layers.Linear, 32, 96), (128, 64, 32)),
    "linear on rows": (partial(layers.Linear, 16, 8), (64, 16)),
    # the evaluation classifier's head: few outputs, whose batch sum a matrix product split
    "linear, ten logits": (partial(layers.Linear, 64, 10), (128, 64)),
    "group norm": (partial(layers.GroupNorm, 8, 32), (128, 32, 8, 8)),
    "layer norm": (partial(layers.LayerNorm, 32), (128, 16, 32)),
}


def _namesake(build: partial) -> partial:
    """The torch.nn layer a diffcourse.layers one derives from, with the same arguments."""
    return partial(build.func.__bases__[0], *build.args, **build.keywords)


def _grads(build, shape, seed=0):
    """The layer's output and every gradient (input and parameters) for a fixed input and g."""
    torch.manual_seed(seed)
    layer = build()
    for p in layer.parameters():  # away from nn's initial ones and zeros
        nn.init.normal_(p)
    x = (torch.randn(shape) * 2 + 0.5).requires_grad_()
    out = layer(x)
    out.backward(torch.randn_like(out))
    return [out.detach(), x.grad, *(p.grad for p in layer.parameters())]


@pytest.mark.parametrize("case", CASES)
def test_each_layer_is_its_namesake(case):
    build, shape = CASES[case]
    ours, theirs = _grads(build, shape), _grads(_namesake(build), shape)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):  # float32 sums of up to 8,192 terms, added in another order
        assert (a - b).abs().max() <= 2e-5 * b.abs().max()


@pytest.mark.parametrize("case", CASES)
def test_the_same_bits_at_one_two_and_four_threads(case):
    build, shape = CASES[case]
    one = _at_threads(1, lambda: _grads(build, shape))
    for threads in (2, 4):
        other = _at_threads(threads, lambda: _grads(build, shape))
        for a, b in zip(one, other):
            assert torch.equal(a, b), threads


def test_the_namesakes_do_differ():
    """What the layers are for: nn.Conv2d's own weight gradient, at this size, is not the same at 1
    and 2 threads on this CPU (skipped where another CPU's kernel happens to agree)."""
    build, shape = CASES["conv 3x3"]
    one = _at_threads(1, lambda: _grads(_namesake(build), shape))
    two = _at_threads(2, lambda: _grads(_namesake(build), shape))
    if torch.equal(one[2], two[2]):
        pytest.skip("this CPU's convolution kernel sums the same way at 1 and 2 threads")
    assert torch.equal(one[0], two[0])  # the forward pass agrees; the weight gradient does not


def test_the_weight_gradient_is_a_forward_convolution():
    torch.manual_seed(2)
    for stride, padding, k in ((1, 1, 3), (2, 1, 3), (1, 0, 1), (2, 0, 3)):
        x = torch.randn(5, 3, 8, 8, dtype=torch.float64)  # stride 2: rows past the kernel, cut
        w = torch.randn(4, 3, k, k, dtype=torch.float64, requires_grad=True)
        out = torch.nn.functional.conv2d(x, w, stride=stride, padding=padding)
        g = torch.randn_like(out)
        (expected,) = torch.autograd.grad(out, w, g)
        got = layers.conv2d_weight_grad(x, g, k, (stride, stride), (padding, padding))
        torch.testing.assert_close(got, expected)


def test_outside_training_the_layers_are_their_namesakes():
    torch.manual_seed(3)
    conv, lin = layers.Conv2d(4, 4, 3, padding=1).eval(), layers.Linear(4, 4).eval()
    x = torch.randn(2, 4, 5, 5)
    assert torch.equal(conv(x), nn.Conv2d.forward(conv, x))
    assert torch.equal(
        lin(x.flatten(2).transpose(1, 2)), nn.Linear.forward(lin, x.flatten(2).transpose(1, 2))
    )
    with torch.no_grad():
        assert torch.equal(
            layers.GroupNorm(2, 4)(x), nn.GroupNorm.forward(layers.GroupNorm(2, 4), x)
        )


def test_conv2d_refuses_what_its_gradient_does_not_cover():
    for kwargs in (dict(groups=2), dict(dilation=2), dict(padding_mode="reflect")):
        with pytest.raises(ValueError, match="groups, dilation and padding_mode"):
            layers.Conv2d(4, 4, 3, padding=1, **kwargs)


def test_the_weight_gradient_names_a_bad_argument():
    x, g = torch.randn(2, 3, 5, 5), torch.randn(2, 4, 5, 5)
    with pytest.raises(ValueError, match="x must have 4 dimensions"):
        layers.conv2d_weight_grad(x[0], g, 3, (1, 1), (1, 1))
    with pytest.raises(ValueError, match="g must have shape"):
        layers.conv2d_weight_grad(x, g[:1], 3, (1, 1), (1, 1))
    with pytest.raises(TypeError, match="g has dtype"):
        layers.conv2d_weight_grad(x, g.double(), 3, (1, 1), (1, 1))


def _conv(x, w, b, stride, padding):
    return layers._Conv2dFn.apply(x, w, b, stride, padding)  # apply takes no keywords before 2.13


def test_the_backward_passes_are_the_derivatives():
    """gradcheck in float64: each hand-written backward against finite differences."""
    torch.manual_seed(4)

    def inputs(*shapes):
        return [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in shapes]

    x, w, b = inputs((3, 4, 5, 5), (6, 4, 3, 3), (6,))
    for stride, padding in (((1, 1), (1, 1)), ((2, 2), (1, 1)), ((1, 1), (0, 0))):
        conv = partial(_conv, stride=stride, padding=padding)
        assert torch.autograd.gradcheck(conv, (x, w, b))
    x, w, b = inputs((3, 7, 4), (5, 4), (5,))
    assert torch.autograd.gradcheck(layers._LinearFn.apply, (x, w, b))
    x, w, b = inputs((3, 8, 4, 4), (8,), (8,))
    fn = lambda x, w, b: layers._GroupNormFn.apply(x, w, b, 4, 1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))


def test_image_samples_are_the_same_at_one_two_and_four_threads():
    """With the weights fixed, samples do not move with the thread count either: 4 DDIM steps of
    eq. 170 and of eq. 166 (whose classifier gradient in x_t runs the networks' backward) on 256
    digit-sized images give the same bits at 1, 2 and 4 threads."""
    from diffcourse import guidance, samplers
    from diffcourse.models import ConvClassifier, UNet
    from diffcourse.schedules import linear_schedule

    torch.manual_seed(5)
    unet = UNet(channels=1, size=8, T=1000, num_classes=10, width=32).eval()
    classifier = ConvClassifier(channels=1, size=8, num_classes=10, width=32, T=1000).eval()
    schedule = linear_schedule(1000)
    y = torch.arange(256) % 10
    noise = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(6))

    def samples():
        rules = (
            guidance.batched_cfg_eps_fn(unet, y, 3.0),
            guidance.classifier_guided_eps_fn(
                unet.eps_fn(), guidance.classifier_grad_fn(classifier, y), schedule, 3.0
            ),
        )
        with torch.no_grad():
            return [samplers.ddim_sample(r, noise, schedule, 4, progress=False) for r in rules]

    one = _at_threads(1, samples)
    for threads in (2, 4):
        for a, b in zip(one, _at_threads(threads, samples)):
            assert torch.equal(a, b), threads


def test_layer_norm_and_the_weight_gradient_refuse_what_torch_nn_refuses():
    """Found by fuzzing: the written-out LayerNorm broadcast [2, 1] against its 4 weights."""
    with pytest.raises(ValueError, match=r"^x must have 4 features in dimension -1"):
        layers.LayerNorm(4)(torch.randn(2, 1))
    x, g = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 8, 8)
    with pytest.raises(ValueError, match="^kernel_size must be an int >= 1"):
        layers.conv2d_weight_grad(x, g, -1, (1, 1), (1, 1))
