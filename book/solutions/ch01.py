"""Reference solution to exercise 1.3: the exact denoiser of one round
Gaussian.

If x_0 ~ N(mu, s2 I) and x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps,
then x_t ~ N(sqrt(alpha_bar) mu, c I) with c = alpha_bar s2 + 1 - alpha_bar,
and everything follows from its score."""

import torch


def gaussian_score(
    x_t: torch.Tensor, alpha_bar: float, mu: torch.Tensor, s2: float
) -> torch.Tensor:
    """grad log p_t(x_t) = -(x_t - sqrt(alpha_bar) mu) / c, with
    c = alpha_bar s2 + 1 - alpha_bar."""
    c = alpha_bar * s2 + 1 - alpha_bar
    return -(x_t - alpha_bar**0.5 * mu) / c


def gaussian_eps(
    x_t: torch.Tensor, alpha_bar: float, mu: torch.Tensor, s2: float
) -> torch.Tensor:
    """The perfect noise predictor E[eps | x_t] = -sqrt(1 - alpha_bar) grad log
    p_t(x_t)."""
    return -((1 - alpha_bar) ** 0.5) * gaussian_score(x_t, alpha_bar, mu, s2)


def gaussian_x0(
    x_t: torch.Tensor, alpha_bar: float, mu: torch.Tensor, s2: float
) -> torch.Tensor:
    """E[x_0 | x_t] by Tweedie's formula (Luo eq. 133): (x_t + (1 - alpha_bar)
    score) / sqrt(alpha_bar)."""
    return (
        x_t + (1 - alpha_bar) * gaussian_score(x_t, alpha_bar, mu, s2)
    ) / alpha_bar**0.5
