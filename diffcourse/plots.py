"""The course's recurring pictures: samples over the contour lines of a 2-D mixture's density, and
grids of images with one row per class."""
from __future__ import annotations

from typing import Optional

import torch

from .checks import check_int, check_real
from .mixture import GaussianMixture


def density_grid(mixture: GaussianMixture, lim: float = 3.5, cells: int = 200,
                 alpha_bar: Optional[float] = None):
    """(x1, x2, p) on a cells x cells grid over [-lim, lim]^2, on the CPU, ready for ``contour`` or
    ``contourf``. p is the mixture's density, or with ``alpha_bar`` the density of the noisy
    x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (``mixture.diffuse(alpha_bar)``): the
    forward process's pictures of chapter 1."""
    if not isinstance(mixture, GaussianMixture):
        raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    if mixture.dim != 2:
        raise ValueError(f"mixture must be 2-D for density_grid, got dim={mixture.dim}")
    lim = check_real(lim, "lim", low=0, low_open=True)
    cells = check_int(cells, "cells", low=2)
    if alpha_bar is not None:
        mixture = mixture.diffuse(alpha_bar)
    axis = torch.linspace(-lim, lim, cells, dtype=mixture.dtype, device=mixture.device)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    p = mixture.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(cells, cells)
    return gx.cpu(), gy.cpu(), p.cpu()


def samples_over_density(ax, grid, x: torch.Tensor, y: Optional[torch.Tensor] = None, title: str = "",
                         per_class: int = 600, lim: float = 3.5, color: Optional[str] = None,
                         filled: bool = False) -> None:
    """Scatter ``x`` (coloured by the asked-for label ``y``, at most ``per_class`` points each) over
    the black contour lines of ``grid`` (from :func:`density_grid`), on a square of half-width lim.
    ``filled=True`` shades the density instead (blue, 20 levels) under small black dots, as the
    forward-process pictures of chapter 1 do."""
    x = x.detach().cpu()
    if filled:
        ax.contourf(*grid, levels=20, cmap="Blues")
    else:
        ax.contour(*grid, levels=6, colors="black", linewidths=0.6, alpha=0.7, zorder=3)
    if y is None:
        ax.scatter(*x[:per_class].T, s=1 if filled else 2, alpha=0.3 if filled else 0.6,
                   color=color or ("k" if filled else "C0"))
    else:
        y = y.cpu()
        for c in torch.unique(y).tolist():
            ax.scatter(*x[y == c][:per_class].T, s=2, alpha=0.6, color=f"C{c}", label=f"asked y = {c}")
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)


def image_grid(ax, x: torch.Tensor, rows: int, title: str = "", row_labels: Optional[list] = None) -> None:
    """Show images ``x`` [N, 1, H, W] in [-1, 1] as a grid of ``rows`` rows, in order (row r holds the
    r-th block of N / rows images: one row per class when x is sorted by label), dark ink on white."""
    if x.ndim != 4 or x.shape[1] != 1 or rows < 1 or x.shape[0] % rows:
        raise ValueError(f"x must be [N, 1, H, W] with N a multiple of rows={rows}, got {tuple(x.shape)}")
    n, _, h, w = x.shape
    cols = n // rows
    tiles = torch.nn.functional.pad(x.detach().cpu().clamp(-1, 1), (1, 1, 1, 1), value=-1)  # white gutters
    grid = tiles.reshape(rows, cols, h + 2, w + 2).permute(0, 2, 1, 3).reshape(rows * (h + 2), cols * (w + 2))
    ax.imshow(grid.numpy(), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    ax.set_yticks([(h + 2) * (r + 0.5) for r in range(rows)], row_labels or list(range(rows)), fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)


def error_over_levels(ax, levels, errors: dict, title: str = "") -> None:
    """Relative score errors against the level t (1-based on the axis), both axes logarithmic, one
    line per entry of ``errors`` ({label: values at ``levels``, 0-based}): chapter 1's picture of a
    learned score held against the exact one, here for any model."""
    for (label, values), style in zip(errors.items(), ("o-", "s--", "^:", "d-.")):
        ax.plot([t + 1 for t in levels], [float(v) for v in values], style, label=label)
    ax.set(xscale="log", yscale="log", xlabel="level t", ylabel="RMS(learned - exact) / RMS(exact)", title=title)
    ax.legend()
