"""Noise schedules and the forward process q(x_t | x_0) (Luo eq. 69-70; Ho et al. 2020).

Code indexes time 0..T-1 where the book writes t = 1..T:
``alpha_bar[t] = prod(alphas[:t+1])`` and ``x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Schedule:
    """``betas``, ``alphas = 1 - betas`` and ``alpha_bar`` (cumulative product), each of shape (T,)."""

    betas: torch.Tensor

    def __post_init__(self):
        b = self.betas
        if b.ndim != 1 or b.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(b.shape)}")
        if not torch.all((b > 0) & (b < 1)):
            raise ValueError("betas must lie in (0, 1)")

    @property
    def T(self) -> int:
        return self.betas.numel()

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.betas

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alphas, dim=0)

    def to(self, device=None, dtype=None) -> "Schedule":
        return Schedule(self.betas.to(device=device, dtype=dtype))


def _check_T(T: int) -> None:
    if not isinstance(T, int) or isinstance(T, bool) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")


def linear_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4).

    The defaults are DDPM's for T = 1000; for a shorter chain scale both by 1000 / T so that
    ``alpha_bar[-1]`` still reaches near zero.
    """
    _check_T(T)
    if not 0 < beta_start <= beta_end < 1:
        raise ValueError(f"need 0 < beta_start <= beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2) (Nichol & Dhariwal 2021, eq. 17).

    Betas are clipped at ``max_beta`` as in that paper, to keep the last step finite.
    """
    _check_T(T)
    if s < 0:
        raise ValueError(f"s must be >= 0, got {s}")
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-8, max=max_beta)
    return Schedule(betas)


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast against ``like`` (batch first), in its dtype and device."""
    v = values.to(like.device)[t].to(like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def check_steps(t: torch.Tensor, n: int, T: int, name: str = "t") -> torch.Tensor:
    """Validate a LongTensor of 0-based steps for a batch of ``n``."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.long:
        raise TypeError(f"{name} must be a LongTensor of 0-based steps")
    if t.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), got {tuple(t.shape)}")
    if n and (int(t.min()) < 0 or int(t.max()) >= T):
        raise ValueError(f"{name} must lie in 0..{T - 1}")
    return t


def q_sample(x0: torch.Tensor, t: torch.Tensor, schedule: Schedule, eps: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)  (Luo eq. 70)."""
    check_steps(t, x0.shape[0], schedule.T)
    if eps is None:
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    elif eps.shape != x0.shape:
        raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
    a = _gather(schedule.alpha_bar, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps
