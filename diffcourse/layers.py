"""Layers that train to the same weights, bit for bit, at 1, 2 or 4 CPU threads.

A weight's gradient is a sum over the batch (and over pixels or tokens). On a CPU, PyTorch's kernels
for a convolution's weight gradient, a group norm's backward and a matrix product with a long sum
split that sum between threads, so the last bits of the weights depend on the thread count. The
layers below are their ``torch.nn`` namesakes with those sums done another way: a convolution's
weight gradient as a forward convolution (:func:`conv2d_weight_grad`), a linear layer's one
sample at a time (``bmm`` over its tokens or pixels, then the batch added), the normalisations'
backward as plain reductions over each sample's channels. For the shapes the course trains, each of
these splits its work between threads by output element, never within one sum
(``tests/test_layers.py`` checks 1, 2 and 4 threads). The forward passes are their namesakes'
(LayerNorm, small in chapter 10's text encoder, is written out whole, which moves its output by
float rounding); off the CPU each layer is its namesake entirely.

Some counts (3, 5 or 6 threads) still change the last bits: PyTorch's elementwise kernels compute
the remainder of each thread's share in a scalar loop, so a tensor split off the vector width rounds
differently. So may other sizes: a sum of 32,768 elements or more into one output (a bias with one
channel, say) is split between threads. README, "Reproducibility".
"""

from __future__ import annotations

from typing import Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .checks import check_bool, check_int, check_ints, check_real, check_tensor


def _sizes(value: Union[int, Sequence[int]], name: str, low: int = 1) -> None:
    """A size argument: an int >= ``low``, or a non-empty tuple or list of them (torch's pairs)."""
    if isinstance(value, (tuple, list)):
        check_ints(value, name, low=low)
    else:
        check_int(value, name, low=low)


def _check_input(x: torch.Tensor, layer: nn.Module, dim: int, size: int, what: str) -> None:
    """``x`` for ``layer``: a float tensor on its weights' device and of their dtype, with ``size``
    ``what`` in dimension ``dim``. Attributes only: nothing is read from the device."""
    weight = layer.weight
    check_tensor(x, "x", floating=True)
    if weight is not None:
        name = type(layer).__name__
        check_tensor(x, "x", dtype=weight.dtype, device=weight.device, owner=f"{name}'s weight")
    if x.ndim <= max(dim, -dim - 1) or x.shape[dim] != size:
        raise ValueError(
            f"x must have {size} {what} in dimension {dim}, got shape {tuple(x.shape)}"
        )


def _stable(x: torch.Tensor, module: nn.Module) -> bool:
    return module.training and x.device.type == "cpu" and torch.is_grad_enabled()


def conv2d_weight_grad(
    x: torch.Tensor,
    g: torch.Tensor,
    kernel_size: int,
    stride: Tuple[int, int],
    padding: Tuple[int, int],
) -> torch.Tensor:
    """conv2d's weight gradient for input x and output gradient g, the sum over n and output
    pixels p of g[n, o, p] x[n, i, s p + k]: itself a forward convolution of x with g as the filter,
    the batch taking the channels' place. A forward convolution splits its work between threads by
    output element, and each output here is a whole sum, added in one order. The stride s becomes
    g's dilation; where the padded size less the kernel is not a multiple of s, the result has rows
    and columns past the kernel, which are cut."""
    check_tensor(x, "x", floating=True, ndim=4)
    kernel_size = check_int(kernel_size, "kernel_size", low=1)
    check_tensor(
        g,
        "g",
        floating=True,
        shape=(len(x), None, None, None),
        dtype=x.dtype,
        device=x.device,
        owner="x",
    )
    # channels-last copies: oneDNN's fastest layout for this shape (1.5x against the transposes)
    x, g = (v.transpose(0, 1).contiguous(memory_format=torch.channels_last) for v in (x, g))
    grad_w = F.conv2d(x, g, padding=padding, dilation=stride)
    return grad_w[:, :, :kernel_size, :kernel_size].transpose(0, 1)


class _Conv2dFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding):
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.padding, ctx.has_bias = stride, padding, bias is not None
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:  # oneDNN's: split by output element already
            grad_x = torch.nn.grad.conv2d_input(x.shape, weight, g, ctx.stride, ctx.padding)
        if ctx.needs_input_grad[1]:
            grad_w = conv2d_weight_grad(x, g, weight.shape[-1], ctx.stride, ctx.padding)
        if ctx.has_bias and ctx.needs_input_grad[2]:  # 8,192 terms a channel for 8x8 digits
            grad_b = g.sum((0, 2, 3))
        return grad_x, grad_w, grad_b, None, None


class _LinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = g @ weight
        if ctx.needs_input_grad[1]:  # [N, rows, out] and [N, rows, in]: rows are tokens, pixels
            n = len(x)  # each sample's sum, then the batch's
            grad_w = torch.bmm(
                g.reshape(n, -1, g.shape[-1]).transpose(1, 2), x.reshape(n, -1, x.shape[-1])
            ).sum(0)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = g.reshape(-1, g.shape[-1]).sum(0)
        return grad_x, grad_w, grad_b


class Conv2d(nn.Conv2d):
    """:class:`torch.nn.Conv2d` (a square kernel, zero padding given in pixels, no groups or
    dilation) whose weight gradient sums the batch in a fixed order while it trains on a CPU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Union[int, Tuple[int, int]],
        stride: Union[int, Tuple[int, int]] = 1,
        padding: Union[int, Tuple[int, int]] = 0,
        **kwargs,
    ) -> None:
        check_int(in_channels, "in_channels", low=1)
        check_int(out_channels, "out_channels", low=1)
        _sizes(kernel_size, "kernel_size")
        _sizes(stride, "stride")
        if not isinstance(padding, str):
            _sizes(padding, "padding", low=0)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, **kwargs)
        if self.groups != 1 or self.dilation != (1, 1) or self.padding_mode != "zeros":
            raise ValueError(
                "Conv2d: groups, dilation and padding_mode must be left at their defaults"
            )
        if self.kernel_size[0] != self.kernel_size[1] or isinstance(self.padding, str):
            raise ValueError(
                f"Conv2d: kernel_size must be square and padding a number of pixels, got "
                f"kernel_size={self.kernel_size}, padding={self.padding!r}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x", ndim=4)  # images [N, C, H, W]
        _check_input(x, self, 1, self.in_channels, "channels")
        if _stable(x, self):
            return _Conv2dFn.apply(x, self.weight, self.bias, self.stride, self.padding)
        return super().forward(x)


class Linear(nn.Linear):
    """:class:`torch.nn.Linear` whose weight gradient, for inputs [N, ..., in], sums the rows of each
    sample (tokens, pixels, or the one row of an input [N, in]) and then the batch while it trains
    on a CPU. On [N, in] a plain matrix product is not enough: with few outputs (a classifier's ten
    logits from 64 features, batch 128) the CPU's matrix product split the batch's sum between
    threads on an AMD EPYC, and the weights moved by ~4e-9 between 1 and 2 threads."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs) -> None:
        check_int(in_features, "in_features", low=1)
        check_int(out_features, "out_features", low=1)
        super().__init__(in_features, out_features, check_bool(bias, "bias"), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self, -1, self.in_features, "features")
        if _stable(x, self):
            return _LinearFn.apply(x, self.weight, self.bias)
        return super().forward(x)


class _GroupNormFn(torch.autograd.Function):
    """PyTorch's own group norm forward (split by sample and group, the same at 1, 2 and 4
    threads), with the backward written as plain reductions over each channel's pixels."""

    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps):
        n, c = x.shape[:2]
        pixels = x.shape[2:].numel()
        y, mean, rstd = torch.native_group_norm(x, weight, bias, n, c, pixels, groups, eps)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.groups = groups
        return y

    @staticmethod
    @once_differentiable  # mean and rstd are saved as constants: no second derivative
    def backward(ctx, g):
        x, weight, mean, rstd = ctx.saved_tensors
        n, c = x.shape[:2]
        k = c // ctx.groups  # channels per group
        xf, gf = x.reshape(n, c, -1), g.reshape(n, c, -1)
        mean, rstd = mean.repeat_interleave(k, 1), rstd.repeat_interleave(k, 1)  # [N, C]
        # per sample and channel, sums over the pixels: of g, and of g x_hat
        g_sum = gf.sum(-1)
        gx_sum = ((gf * xf).sum(-1) - mean * g_sum) * rstd
        grad_w, grad_b = gx_sum.sum(0), g_sum.sum(0)
        if not ctx.needs_input_grad[0]:
            return None, grad_w, grad_b, None, None
        # dx = rstd (w g - mean(w g) - x_hat mean(w g x_hat)), the means over the group's
        # elements, written as coef_g g + coef_x x + const per sample and channel
        size = k * xf.shape[-1]

        def group_mean(v):  # [N, C] sums over pixels -> the mean over each group, per channel
            return v.reshape(n, -1, k).sum(-1).repeat_interleave(k, 1) / size

        coef_x = -rstd * rstd * group_mean(weight * gx_sum)
        const = -rstd * group_mean(weight * g_sum) - coef_x * mean
        grad_x = (coef_x[..., None] * xf).add_(const[..., None])
        grad_x.addcmul_((rstd * weight)[..., None], gf)
        return grad_x.reshape(x.shape), grad_w, grad_b, None, None


class GroupNorm(nn.GroupNorm):
    """:class:`torch.nn.GroupNorm` (affine, on images [N, C, H, W]) whose backward, on a CPU, is
    written as plain reductions: the fused CPU backward splits its sums for x's gradient by thread.
    Unlike Conv2d and Linear it takes this path in eval mode too, whenever a gradient is being
    recorded: classifier guidance differentiates a classifier with respect to x_t, and its samples
    should not move with the thread count either."""

    def __init__(
        self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, **kwargs
    ) -> None:
        check_int(num_groups, "num_groups", low=1)
        check_int(num_channels, "num_channels", low=1)  # torch checks that groups divide it
        check_real(eps, "eps", low=0.0, low_open=True)
        super().__init__(num_groups, num_channels, eps, check_bool(affine, "affine"), **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self, 1, self.num_channels, "channels")
        if x.device.type == "cpu" and torch.is_grad_enabled() and self.affine and x.dim() == 4:
            return _GroupNormFn.apply(
                x.contiguous(), self.weight, self.bias, self.num_groups, self.eps
            )
        return super().forward(x)


class LayerNorm(nn.LayerNorm):
    """:class:`torch.nn.LayerNorm` written as means and variances over the last dimensions, on a
    CPU (forward and backward: the fused backward splits its sums for the weights by thread)."""

    def __init__(
        self, normalized_shape: Union[int, Sequence[int]], eps: float = 1e-5, **kwargs
    ) -> None:
        _sizes(normalized_shape, "normalized_shape")
        check_real(eps, "eps", low=0.0, low_open=True)
        super().__init__(normalized_shape, eps, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self, -1, self.normalized_shape[-1], "features")
        k = len(self.normalized_shape)
        if tuple(x.shape[x.ndim - k :]) != tuple(self.normalized_shape) or x.ndim < k:
            raise ValueError(
                f"x's last dimensions must be {tuple(self.normalized_shape)} (LayerNorm's "
                f"normalized_shape), got shape {tuple(x.shape)}"
            )
        if x.device.type != "cpu":
            return super().forward(x)
        dims = tuple(range(-k, 0))
        centred = x - x.mean(dims, keepdim=True)
        h = centred * torch.rsqrt(centred.square().mean(dims, keepdim=True) + self.eps)
        if not self.elementwise_affine:
            return h
        return h * self.weight + (self.bias if self.bias is not None else 0)
