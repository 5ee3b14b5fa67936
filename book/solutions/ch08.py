"""Reference solution to exercise 8.1: one DDIM step (Song, Meng & Ermon
2021, eq. 12).

From the level with cumulative product a_t to an earlier level a_s (a_s = 1
for the clean data): predict x_0, then re-noise it to the level a_s with the
predicted noise, plus fresh noise of standard deviation xi that eta scales.
"""

import torch


def ddim_xi(a_t: float, a_s: float, eta: float) -> float:
    """xi = eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s)."""
    return eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    a_t: float,
    a_s: float,
    eta: float = 0.0,
    noise: torch.Tensor = None,
) -> torch.Tensor:
    """x_s = sqrt(a_s) x0_hat + sqrt(1 - a_s - xi^2) eps + xi z, with
    x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t). ``noise`` is z (needed
    when xi > 0)."""
    x0_hat = (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    xi = ddim_xi(a_t, a_s, eta)
    x_s = a_s**0.5 * x0_hat + max(1 - a_s - xi**2, 0.0) ** 0.5 * eps
    if xi > 0:
        if noise is None:
            raise ValueError("eta > 0 needs the fresh noise z")
        x_s = x_s + xi * noise
    return x_s
