"""Reference solution to exercise 3.3: the classifier gradient of two Gaussian
classes that share a covariance, in closed form at every noise level.

Class 0 is N(mu0, S) with weight w0, class 1 is N(mu1, S) with weight w1. At
step t both components have mean m_k = sqrt(alpha_bar) mu_k and the same
covariance C = alpha_bar S + (1 - alpha_bar) I, so the log-odds
l(x) = log p_t(1|x) - log p_t(0|x) is affine in x, and
p_t(1|x) = sigmoid(l(x))."""

import torch


def two_class_log_odds(x, mu0, mu1, cov, w0, w1, alpha_bar):
    """l(x) = (m1 - m0)^T C^{-1} x - (m1^T C^{-1} m1 - m0^T C^{-1} m0) / 2 +
    log(w1 / w0): [N]."""
    a = alpha_bar
    C = a * cov + (1 - a) * torch.eye(cov.shape[0], dtype=cov.dtype)
    m0, m1 = a**0.5 * mu0, a**0.5 * mu1
    direction = torch.linalg.solve(C, m1 - m0)  # C^{-1} (m1 - m0)
    offset = -0.5 * (
        m1 @ torch.linalg.solve(C, m1) - m0 @ torch.linalg.solve(C, m0)
    )
    return (
        x @ direction
        + offset
        + torch.log(torch.as_tensor(w1 / w0, dtype=x.dtype))
    )


def two_class_grad(x, y: int, mu0, mu1, cov, w0, w1, alpha_bar):
    """grad_x log p_t(y | x) = (y - sigmoid(l(x))) C^{-1} (m1 - m0), for y in
    {0, 1}: [N, D].

    For y = 1: d/dl log sigmoid(l) = 1 - sigmoid(l); for y = 0: d/dl log(1 -
    sigmoid(l)) = -sigmoid(l); and grad l = C^{-1} (m1 - m0) by the chain rule.
    """
    a = alpha_bar
    C = a * cov + (1 - a) * torch.eye(cov.shape[0], dtype=cov.dtype)
    direction = torch.linalg.solve(C, a**0.5 * (mu1 - mu0))
    p1 = torch.sigmoid(two_class_log_odds(x, mu0, mu1, cov, w0, w1, alpha_bar))
    return (y - p1)[:, None] * direction[None, :]
