"""Noise schedules and the forward process q(x_t | x_0) (Luo eq. 69-70; Ho et al. 2020).

Code indexes time 0..T-1 where the book writes t = 1..T:
``alpha_bar[t] = prod(alphas[:t+1])`` and ``x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import torch

from .checks import (
    check_alike,
    check_device,
    check_float_dtype,
    check_generator,
    check_int,
    check_real,
    check_schedule,
    check_step_range,
    check_steps,
    check_tensor,
)

__all__ = [
    "Schedule",
    "linear_schedule",
    "cosine_schedule",
    "q_sample",
    "posterior_mean",
    "posterior_variance",
    "check_steps",
    "ddim_levels",
    "nsr_interval",
]


@dataclass(frozen=True)
class Schedule:
    """``betas``, ``alphas = 1 - betas`` and ``alpha_bar`` (cumulative product), each of shape (T,)."""

    betas: torch.Tensor

    def __post_init__(self):
        b = check_tensor(self.betas, "betas", floating=True)
        if b.ndim != 1 or b.numel() < 1:
            raise ValueError(f"betas must be a non-empty 1-D tensor, got shape {tuple(b.shape)}")
        if not torch.all((b > 0) & (b < 1)):
            raise ValueError("betas must lie in (0, 1)")
        object.__setattr__(self, "_tables", {})

    def gather(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``betas``, ``alphas`` or ``alpha_bar`` at the steps t, shaped to broadcast against ``like``
        (batch first), in its dtype and on its device. The table is copied to a device once and
        kept, so the steps of a sampler never wait for a host-to-device copy."""
        if name not in ("betas", "alphas", "alpha_bar"):
            raise ValueError(f"name must be 'betas', 'alphas' or 'alpha_bar', got {name!r}")
        if name not in self._tables:
            self._tables[name] = StepTable(getattr(self, name), "the schedule")
        return self._tables[name].at(t, like)

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
        """This schedule on ``device`` and/or in the floating-point ``dtype``."""
        device = check_device(device)
        dtype = None if dtype is None else check_float_dtype(dtype)
        return Schedule(self.betas.to(device=device, dtype=dtype))


def linear_schedule(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Schedule:
    """Betas evenly spaced from ``beta_start`` to ``beta_end`` (Ho et al. 2020, Sec. 4).

    The defaults are DDPM's for T = 1000; for a shorter chain scale both by 1000 / T so that
    ``alpha_bar[-1]`` still reaches near zero.
    """
    check_int(T, "T", low=1)
    beta_start = check_real(beta_start, "beta_start", low=0, high=1, low_open=True, high_open=True)
    beta_end = check_real(beta_end, "beta_end", low=beta_start, high=1, high_open=True)
    return Schedule(torch.linspace(beta_start, beta_end, T, dtype=torch.float64))


def cosine_schedule(T: int, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """alpha_bar(t) = f(t)/f(0), f(t) = cos^2(((t/T + s)/(1 + s)) pi/2) (Nichol & Dhariwal 2021, eq. 17).

    Betas are clipped at ``max_beta`` as in that paper, to keep the last step finite.
    """
    check_int(T, "T", low=1)
    s = check_real(s, "s", low=0)
    max_beta = check_real(max_beta, "max_beta", low=0, high=1, low_open=True, high_open=True)
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-8, max=max_beta)
    return Schedule(betas)


def ddim_levels(T: int, steps: int) -> List[int]:
    """The 0-based levels a DDIM run of ``steps`` network evaluations visits on a chain of T steps:
    ``steps`` evenly spaced values from T - 1 down to 0, rounded: the sub-sequence tau of Song,
    Meng & Ermon (2021, Sec. 4.2), spaced evenly like the "linear" choice of their Appendix D.2
    (tau_i = floor(c i), which need not reach T - 1). ``steps = T`` visits every level."""
    T = check_int(T, "T", low=1)
    steps = check_int(steps, "steps", low=1, high=T)
    return torch.linspace(T - 1, 0, steps).round().long().unique_consecutive().tolist()


class StepTable:
    """Per-step values (a tensor [T]) read at the steps t of a batch, from a copy kept per device and
    dtype: after the first read on a device no copy is made (a copy from the host waits for the
    device). The same numbers as indexing the values and converting them."""

    def __init__(self, values: torch.Tensor, built_for: str = ""):
        self.values = check_tensor(values, "values", floating=True, ndim=1)
        if not isinstance(built_for, str):
            raise TypeError(f"built_for must be a str, got {type(built_for).__name__}")
        self.built_for = built_for  # what uses the table, for the message of a step beyond it
        self._copies: dict = {}

    def at(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """values[t] reshaped to broadcast against ``like`` (batch first), in its dtype and device.
        A step beyond the table (a schedule of another length) is a ValueError naming ``t``, and so is
        a ``t`` that is not one step per row of ``like`` (metadata only: no device read)."""
        if not isinstance(t, torch.Tensor) or t.is_floating_point() or t.dtype == torch.bool:
            got = f"dtype {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise TypeError(f"t must be an integer tensor of 0-based steps, got {got}")
        if like.ndim and tuple(t.shape) != (like.shape[0],):
            raise ValueError(
                f"t must have shape ({like.shape[0]},), one step per row of x_t, "
                f"got {tuple(t.shape)}"
            )
        check_step_range(t, self.values.shape[0], "t", self.built_for)
        key = (like.device, like.dtype)
        table = self._copies.get(key)
        if table is None:
            table = self._copies[key] = self.values.to(device=like.device, dtype=like.dtype)
        return table[t].reshape(-1, *([1] * (like.ndim - 1)))


def nsr_interval(schedule: "Schedule", low: float = 1 / 3, high: float = 3.0) -> Tuple[int, int]:
    """The first and last 0-based steps whose noise-to-signal ratio sqrt(1 - alpha_bar_t) /
    sqrt(alpha_bar_t) lies in [low, high]: where neither the noise nor the signal dominates, the
    interval chapter 8 guides on (Kynkaanniemi et al. 2024 choose theirs by search). The ratio grows
    with t, so the steps in between are all inside. No step inside raises ValueError."""
    check_schedule(schedule)
    low = check_real(low, "low", low=0)
    high = check_real(high, "high", low=low)
    ab = schedule.alpha_bar.double()
    inside = torch.nonzero((((1 - ab) / ab).sqrt() >= low) & (((1 - ab) / ab).sqrt() <= high))[:, 0]
    if inside.numel() == 0:
        raise ValueError(f"low and high: no step's noise-to-signal ratio lies in [{low}, {high}]")
    return int(inside.min()), int(inside.max())


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] reshaped to broadcast against ``like`` (batch first), in its dtype and device."""
    v = values.to(like.device)[t].to(like.dtype)
    return v.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(
    x0: torch.Tensor,
    t: torch.Tensor,
    schedule: Schedule,
    eps: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)  (Luo eq. 70) as
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (eq. 69), eps given or drawn."""
    check_tensor(x0, "x0", floating=True)
    if x0.ndim < 1:
        raise ValueError("x0 must have a batch dimension")
    check_steps(t, x0.shape[0], check_schedule(schedule).T)
    if eps is None:
        eps = torch.randn(
            x0.shape,
            generator=check_generator(generator, device=x0.device),
            device=x0.device,
            dtype=x0.dtype,
        )
    else:
        check_tensor(eps, "eps", floating=True)
        if eps.shape != x0.shape:
            raise ValueError(
                f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}"
            )
    a = schedule.gather("alpha_bar", t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def q_sample_at(
    x0: torch.Tensor, step: int, schedule: Schedule, seed: int | None = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every row of ``x0`` noised to one 0-based level ``step`` by :func:`q_sample` (Luo eq. 70),
    its noise drawn from a generator on x0's device seeded with ``seed`` (default: ``step`` itself,
    so each level has its own reproducible noise). Returns ``(x_t, t)``, t the steps as a
    LongTensor, ready for ``eps_fn(x_t, t)``."""
    check_tensor(x0, "x0", floating=True)
    if x0.ndim == 0:
        raise ValueError("x0 must have a batch dimension, got a 0-dim tensor")
    check_schedule(schedule)
    step = check_int(step, "step", low=0, high=schedule.T - 1)
    seed = step if seed is None else check_int(seed, "seed")
    t = torch.full((x0.shape[0],), step, device=x0.device)
    gen = torch.Generator(x0.device).manual_seed(seed)
    return q_sample(x0, t, schedule, generator=gen), t


def _posterior_levels(step: int, schedule: Schedule) -> Tuple[float, float, float]:
    """alpha_t, alpha_bar_t and alpha_bar_{t-1} at the 0-based ``step`` (alpha_bar_{t-1} = 1 before
    the first step), checked, as the posterior's formulas read them."""
    step = check_int(step, "step", low=0, high=check_schedule(schedule).T - 1)
    ab_prev = float(schedule.alpha_bar[step - 1]) if step > 0 else 1.0
    return float(schedule.alphas[step]), float(schedule.alpha_bar[step]), ab_prev


def posterior_variance(step: int, schedule: Schedule) -> float:
    """sigma_q^2(t) = (1 - alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), the variance of the
    true denoising step q(x_{t-1} | x_t, x_0) (Luo eq. 85), at the 0-based ``step`` (the book's
    t = step + 1). It depends on t alone; at step 0 (alpha_bar_{t-1} = 1) it is 0."""
    a_t, ab_t, ab_prev = _posterior_levels(step, schedule)
    return (1 - a_t) * (1 - ab_prev) / (1 - ab_t)


def posterior_mean(
    x_t: torch.Tensor, x0: torch.Tensor, step: int, schedule: Schedule
) -> torch.Tensor:
    """mu_q(x_t, x_0) = (sqrt(alpha_t) (1 - alpha_bar_{t-1}) x_t + sqrt(alpha_bar_{t-1}) (1 - alpha_t)
    x_0) / (1 - alpha_bar_t), the mean of the true denoising step q(x_{t-1} | x_t, x_0) (Luo eq. 93;
    the step is eq. 84), at the 0-based ``step``. At step 0 it is x_0. Given a network's estimate of
    x_0 it is mu_theta, Luo eq. 94; with x_0 estimated from the noise prediction, it is the
    sampler's mean, Luo eq. 125 (``samplers.ddpm_step``)."""
    a_t, ab_t, ab_prev = _posterior_levels(step, schedule)
    check_alike(x_t=x_t, x0=x0)
    return (a_t**0.5 * (1 - ab_prev) * x_t + ab_prev**0.5 * (1 - a_t) * x0) / (1 - ab_t)
