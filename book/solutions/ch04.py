"""Reference solution to exercise 4.3: classifier guidance in noise form, built
from a mixture's densities alone.

eps_guided = eps_uncond - gamma sigma_t grad log p_t(y | x_t) (chapter 4), with
eps_uncond = -sigma_t grad log p_t(x_t) (chapter 1) and the classifier gradient
taken by automatic differentiation of log p_t(y | x_t), never through the
scores of p_t(x | y)."""

import torch


def classifier_guided_eps(
    mixture, x_t: torch.Tensor, alpha_bar: float, y: int, gamma: float
) -> torch.Tensor:
    """The guided noise prediction for a ``diffcourse`` GaussianMixture at one
    noise level."""
    noisy = mixture.diffuse(alpha_bar)  # the law of x_t
    sigma = (1 - alpha_bar) ** 0.5
    eps_uncond = -sigma * noisy.score(x_t)
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        log_py = noisy.class_log_posterior(x)[:, y]  # log p_t(y | x_t)
        (grad,) = torch.autograd.grad(log_py.sum(), x)
    return eps_uncond - gamma * sigma * grad
