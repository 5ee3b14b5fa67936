"""Reference solution to exercise 7.1: the Frechet distance between two
Gaussians, and between Gaussians fitted to two sets of features (the squared
form used by FID).

d^2 = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2}), where
Tr (S_a S_b)^{1/2} = Tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}: the two matrices are
similar, and the second is symmetric positive semi-definite, so its square
root, like S_a^{1/2}, comes from a symmetric eigendecomposition.
"""

import torch


def _sqrtm_psd(S: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite
    matrix."""
    vals, vecs = torch.linalg.eigh((S + S.T) / 2)
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.T


def gaussian_frechet(
    mu_a: torch.Tensor,
    cov_a: torch.Tensor,
    mu_b: torch.Tensor,
    cov_b: torch.Tensor,
) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu_a, cov_a) and
    N(mu_b, cov_b)."""
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)  # similar to (S_a S_b)^{1/2}
    return (
        (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a + cov_b - 2 * cross)
    ).item()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fit a Gaussian (mean, covariance with the 1/(N-1) convention) to each
    set of features a [N, F] and b [M, F], in float64, and return their
    squared Frechet distance."""
    a, b = a.double(), b.double()
    return gaussian_frechet(
        a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T)
    )
