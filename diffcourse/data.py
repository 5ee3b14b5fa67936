"""Ready-made data for the labs. The 2-D sets are labelled Gaussian mixtures, so every exact
quantity (densities, scores, posteriors, at every noise level) is known."""
from __future__ import annotations

import math

import torch

from .mixture import GaussianMixture


def three_blobs(radius: float = 1.2, std: float = 0.5, dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """Three classes, one round Gaussian each, centred on a circle: they overlap a little."""
    if radius < 0 or std <= 0:
        raise ValueError(f"radius must be >= 0 and std > 0, got radius={radius}, std={std}")
    angles = torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = (std ** 2) * torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    return GaussianMixture(means.to(dtype), covs.to(dtype), torch.ones(3, dtype=dtype), torch.arange(3))


def two_moons(components: int = 16, std: float = 0.1, dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """Two interleaved half-circles, each class a chain of ``components`` small Gaussians:
    a sharp, curved shape whose exact score is still known. Centred near the origin."""
    if components < 1 or std <= 0:
        raise ValueError(f"components must be >= 1 and std > 0, got components={components}, std={std}")
    theta = torch.linspace(0, math.pi, components, dtype=torch.float64)
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    means = torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    covs = (std ** 2) * torch.eye(2, dtype=torch.float64).expand(2 * components, 2, 2)
    labels = torch.arange(2).repeat_interleave(components)
    return GaussianMixture(means.to(dtype), covs.to(dtype), torch.ones(2 * components, dtype=dtype), labels)


def checkerboard(cells: int = 3, spacing: float = 0.9, std: float = 0.15,
                 dtype: torch.dtype = torch.float32) -> GaussianMixture:
    """A cells x cells grid of small Gaussians whose class alternates like a chessboard's squares:
    both classes cover the same region, so p(y|x) changes on the scale of one square."""
    if cells < 2 or spacing <= 0 or std <= 0:
        raise ValueError(f"need cells >= 2, spacing > 0 and std > 0, got cells={cells}, spacing={spacing}, std={std}")
    coords = (torch.arange(cells, dtype=torch.float64) - (cells - 1) / 2) * spacing
    i, j = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    means = torch.stack([coords[i.flatten()], coords[j.flatten()]], dim=1)
    covs = (std ** 2) * torch.eye(2, dtype=torch.float64).expand(cells * cells, 2, 2)
    labels = (i + j).flatten() % 2
    return GaussianMixture(means.to(dtype), covs.to(dtype), torch.ones(cells * cells, dtype=dtype), labels)
