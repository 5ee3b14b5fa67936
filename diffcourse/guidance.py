"""Guidance rules: how a conditional score is assembled from simpler pieces.

Both rules act on tensors of one shape (scores, or noise predictions for eq. 170) and know
nothing about networks or samplers. gamma is the paper's guidance scale; other names for it:
Dhariwal & Nichol's classifier scale = gamma, diffusers' ``guidance_scale`` = gamma,
Ho & Salimans' w = gamma - 1.
"""
from __future__ import annotations

import math

import torch


def _check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise TypeError(f"gamma must be a real number, got {type(gamma).__name__}")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    return float(gamma)


def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    for name, v in ((name_a, a), (name_b, b)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} ({a.dtype}) and {name_b} ({b.dtype}) must have the same dtype")
    if a.device != b.device:
        raise ValueError(f"{name_a} ({a.device}) and {name_b} ({b.device}) must be on the same device")


def classifier_guidance(score_uncond: torch.Tensor, classifier_grad: torch.Tensor, gamma: float) -> torch.Tensor:
    """grad log p(x_t) + gamma grad log p(y|x_t)  (Luo eq. 166).

    gamma = 0 ignores y, gamma = 1 gives the conditional score (eq. 165), gamma > 1 sharpens.
    """
    gamma = _check_gamma(gamma)
    _check_pair(score_uncond, classifier_grad, "score_uncond", "classifier_grad")
    return score_uncond + gamma * classifier_grad


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma cond + (1 - gamma) uncond  (Luo eq. 170).

    ``cond``/``uncond`` are both scores or both noise predictions: the rule is linear, and
    score = -eps / sqrt(1 - alpha_bar) scales both alike, so one form gives the other.
    """
    gamma = _check_gamma(gamma)
    _check_pair(cond, uncond, "cond", "uncond")
    return gamma * cond + (1 - gamma) * uncond
