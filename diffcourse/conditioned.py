"""Denoisers whose condition is not a class label (chapter 10): a caption, read by a text encoder and
cross-attention (:class:`CaptionUNet`), or a low-resolution image, fed by concatenation
(:class:`SuperResUNet`). Both are chapter 7's :class:`~diffcourse.models.UNet` with the label table
replaced by the new condition, and both have a **null condition** for classifier-free guidance: the
empty caption, an image of zeros. ``model.null_condition(cond)`` returns it for a batch like ``cond``,
which is what condition dropout in training and the null branch of eq. 170 use.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .checks import check_built_for, check_finite, check_int, check_tensor
from .guidance import negative_prompt_eps_fn
from .layers import Conv2d, Linear
from .metrics import diversity, fidelity
from .models import UNet, _check_images
from .samplers import ddim_sample
from .schedules import Schedule, check_steps
from .text import MAX_TOKENS, PAD, START, CrossAttention, TextEncoder, check_tokens


def low_resolution(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """The low-resolution view of images [N, C, H, W]: the mean of each factor x factor block
    (8x8 digits -> 4x4 for factor 2)."""
    check_tensor(x, "x", ndim=4)  # images [N, C, H, W]
    factor = check_int(factor, "factor", low=1)
    if x.shape[2] % factor or x.shape[3] % factor:
        raise ValueError(
            f"the image size {tuple(x.shape[2:])} must be divisible by factor={factor}"
        )
    return F.avg_pool2d(x, factor)


class _ConditionedUNet(UNet):
    """The U-Net of chapter 7 (unconditional build: no label table), with ``extra_channels`` more input
    channels and optional cross-attention after the middle block and after the last up block."""

    def __init__(
        self,
        channels: int,
        size: int,
        T: int,
        width: int,
        mults: Sequence[int],
        extra_channels: int = 0,
        context_dim: int = 0,
        heads: int = 2,
    ):
        super().__init__(channels=channels, size=size, T=T, num_classes=0, width=width, mults=mults)
        if extra_channels:
            self.inp = Conv2d(channels + extra_channels, width, 3, padding=1)
        widths = [width * m for m in mults]
        self.attn = (
            nn.ModuleList(
                [
                    CrossAttention(widths[-1], context_dim, heads),
                    CrossAttention(width, context_dim, heads),
                ]
            )
            if context_dim
            else None
        )

    def _run(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The U-Net's trunk, with cross-attention to ``context`` where the network has it."""
        if self.attn is None:
            return self._trunk(h, emb)
        return self._trunk(h, emb, lambda k, h: self.attn[k](h, context, mask))

    def eps_fn(self, cond: torch.Tensor):
        """This network as a sampler's ``eps_fn(x_t, t)``, its condition fixed (``null_condition`` for
        the unconditional branch)."""
        return lambda x_t, t: self(x_t, t, cond)


class CaptionUNet(_ConditionedUNet):
    """eps_theta(x_t, t, caption) for 8x8 digits. The caption's tokens go through a
    :class:`~diffcourse.text.TextEncoder`; the mean of their features joins the time embedding (a
    summary every residual block sees, as GLIDE adds its caption to the time embedding), and two
    cross-attention blocks let the 4x4 and 8x8 feature maps read every token (Rombach et al. 2022).
    The null condition is the empty caption: ``<start>`` and padding."""

    def __init__(
        self,
        channels: int = 1,
        size: int = 8,
        T: int = 1000,
        width: int = 32,
        mults: Sequence[int] = (1, 2),
        text_dim: int = 32,
        text_layers: int = 2,
        heads: int = 2,
    ):
        check_int(text_dim, "text_dim", low=1)
        check_int(text_layers, "text_layers", low=0)
        super().__init__(channels, size, T, width, mults, context_dim=text_dim, heads=heads)
        self.text = TextEncoder(dim=text_dim, layers=text_layers, heads=heads)
        self.text_emb = Linear(text_dim, 4 * width)

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """The empty caption's tokens, shaped like ``cond``."""
        null = torch.full_like(cond, PAD)
        null[:, 0] = START
        return null

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        _check_images(x_t, (self.channels, self.size, self.size), self.out[-1].weight)
        check_steps(t, x_t.shape[0], self.T)
        check_tokens(tokens, x_t.shape[0], x_t.device, MAX_TOKENS)
        context, mask = self.text(tokens)
        summary = (context * mask[..., None]).sum(1) / mask.sum(
            1, keepdim=True
        )  # mean over the tokens
        emb = self.embed(t, None, x_t.dtype) + self.text_emb(summary)
        return self._run(self.inp(x_t), emb, context, mask)


class SuperResUNet(_ConditionedUNet):
    """eps_theta(x_t, t, low) for super-resolution: ``low`` is the low-resolution image
    [N, channels, size / factor, size / factor], upsampled to full size (nearest neighbour) and
    concatenated to x_t as extra input channels, the conditioning of cascaded diffusion models
    (Ho et al. 2022, "Cascaded Diffusion Models"; Saharia et al. 2023's SR3). The null condition is
    an image of zeros."""

    def __init__(
        self,
        channels: int = 1,
        size: int = 8,
        factor: int = 2,
        T: int = 1000,
        width: int = 32,
        mults: Sequence[int] = (1, 2),
    ):
        factor = check_int(factor, "factor", low=1)
        if check_int(size, "size", low=1) % factor:
            raise ValueError(f"factor must divide size={size}, got {factor}")
        super().__init__(channels, size, T, width, mults, extra_channels=channels)
        self.factor = factor

    @property
    def low_shape(self):
        return (self.channels, self.size // self.factor, self.size // self.factor)

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor:
        """An image of zeros shaped like ``cond``."""
        return torch.zeros_like(cond)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        _check_images(x_t, (self.channels, self.size, self.size), self.inp.weight)
        check_steps(t, x_t.shape[0], self.T)
        _check_images(
            low, self.low_shape, self.inp.weight, name="low (the low-resolution condition)"
        )
        if low.shape[0] != x_t.shape[0]:
            raise ValueError(f"low has {low.shape[0]} rows but x_t has {x_t.shape[0]}")
        up = F.interpolate(low, scale_factor=self.factor, mode="nearest")
        return self._run(self.inp(torch.cat([x_t, up], dim=1)), self.embed(t, None, x_t.dtype))


# ---- sampling and measuring --------------------------------------------------------------------------------


def guided_sample(
    model: _ConditionedUNet,
    cond: torch.Tensor,
    gamma: float,
    x_T: torch.Tensor,
    schedule: Schedule,
    steps: int,
    negative: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """DDIM samples (``steps`` levels, from ``x_T``) of a conditioned network under eq. 170, its
    second branch the null condition, or the ``negative`` condition (a negative prompt), clamped
    to [-1, 1]: gamma eps(x_t, t, cond) + (1 - gamma) eps(x_t, t, negative or null)."""
    if not isinstance(model, _ConditionedUNet):
        raise TypeError(
            "model must be a CaptionUNet or a SuperResUNet (a class-label UNet samples with "
            f"guidance.batched_cfg_eps_fn), got {type(model).__name__}"
        )
    check_tensor(cond, "cond")  # captions as token ids (text.tokenize), or a low-resolution image
    if negative is not None:
        check_tensor(negative, "negative")
    check_built_for(schedule, model=model)  # a shorter schedule would run at wrong noise levels
    second = model.null_condition(cond) if negative is None else negative
    eps_fn = negative_prompt_eps_fn(model.eps_fn(cond), model.eps_fn(second), gamma)
    return ddim_sample(eps_fn, x_T, schedule, steps=steps, progress=False).clamp(-1, 1)


def superres_metrics(
    judge: nn.Module,
    x: torch.Tensor,
    low: torch.Tensor,
    labels: torch.Tensor,
    group: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
) -> Dict[str, float]:
    """The three measurements of super-resolution samples ``x`` drawn from conditions ``low``:
    **consistency**, the RMSE between each sample's low-resolution view and its condition;
    **agreement**, the share the judge reads as ``labels`` (the class of each condition's source);
    **diversity**, the mean distance between samples of one condition (``group``) over that
    between reference images of one class (``ref_x``, ``ref_y``)."""
    check_tensor(x, "x", floating=True, ndim=4)
    check_tensor(low, "low", floating=True, ndim=4, device=x.device, owner="x")
    if low.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"low must hold one condition per sample, with x's channels {tuple(x.shape[:2])}, "
            f"got {tuple(low.shape)}"
        )
    # the condition's size must divide the sample's, > 1 (a zero width fails the check below)
    factor = x.shape[-1] // max(low.shape[-1], 1)
    if factor < 2 or x.shape[-2:] != (low.shape[-2] * factor, low.shape[-1] * factor):
        raise ValueError(
            f"low must be x downsampled by a whole factor of 2 or more, got {tuple(low.shape[-2:])}"
            f" for x of {tuple(x.shape[-2:])}"
        )
    check_finite(low, "low")  # a NaN condition made the consistency NaN
    consistency = (low_resolution(x, factor) - low).pow(2).mean().sqrt().item()
    return {
        "consistency": consistency,
        "agreement": fidelity(judge, x, labels),
        "diversity": diversity(x, group, ref_x, ref_y),
    }
