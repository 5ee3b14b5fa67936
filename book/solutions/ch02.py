"""Reference solution to exercise 2.3: what knowing the label is worth to the
loss.

At one step t, G_t = (1 - abar_t) E || grad log p_t(y | x_t) ||^2 over labelled
draws (x_0, y) and x_t from the forward process (chapter 2). Estimated by Monte
Carlo, with its standard error."""

import torch


def label_gain(
    mixture,
    alpha_bar: float,
    n: int = 20000,
    generator: torch.Generator = None,
):
    """Monte Carlo estimate of G_t for a ``diffcourse`` GaussianMixture:
    returns (mean, standard error).

    Draw (x_0, y) from the mixture, noise x_0 to x_t, and average
    (1 - alpha_bar) |grad log p_t(y | x_t)|^2, the classifier gradient of the
    noisy mixture.
    """
    x0, y = mixture.sample(n, generator=generator)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    x_t = alpha_bar**0.5 * x0 + (1 - alpha_bar) ** 0.5 * eps
    grad = mixture.diffuse(alpha_bar).classifier_grad(
        x_t, y
    )  # grad log p_t(y | x_t)
    values = (1 - alpha_bar) * grad.pow(2).sum(1)
    return values.mean().item(), (values.std() / n**0.5).item()
