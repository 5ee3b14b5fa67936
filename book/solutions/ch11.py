"""Reference solution to exercise 11.2: what zero-init samples from one
Gaussian class.

For data N(mu, ell^2 I) the law on the straight path is N((1 - t) mu, rho_t^2 I)
with rho_t^2 = (1 - t)^2 ell^2 + t^2, and the exact flow carries a point x at
time t to mu + ell (x - (1 - t) mu) / rho_t at time 0. A sampler whose first
steps are zeroed starts that flow at t_start from x ~ N(0, I) instead of from
the law at t_start."""

import math

import torch


def zero_init_map(
    x: torch.Tensor, mu: torch.Tensor, ell: float, t_start: float
) -> torch.Tensor:
    """Where the exact flow started at ``t_start`` from ``x`` ends at t = 0."""
    rho = math.sqrt((1 - t_start) ** 2 * ell**2 + t_start**2)
    return mu + ell * (x - (1 - t_start) * mu) / rho


def zero_init_law(mu: torch.Tensor, ell: float, t_start: float):
    """(mean, standard deviation) of the samples when x ~ N(0, I) is started at
    ``t_start``: mu (1 - ell (1 - t_start) / rho) and ell / rho."""
    rho = math.sqrt((1 - t_start) ** 2 * ell**2 + t_start**2)
    return mu * (1 - ell * (1 - t_start) / rho), ell / rho
