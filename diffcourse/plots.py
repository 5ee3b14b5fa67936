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


def line_plot(x, curves, xlabel: str, ylabel: str, title: str = "", logx: bool = False, logy: bool = False,
              ax=None, styles=None, figsize=(6.5, 4.0)):
    """``curves`` (label -> values over ``x``) as labelled lines with a legend, on ``ax`` or on a new
    figure; axis labels and title as given, log axes on request; ``styles`` (label -> matplotlib
    format string, e.g. "--o") where wanted. Returns the axes. The labs' curves against t or gamma."""
    import matplotlib.pyplot as plt

    if not isinstance(curves, dict) or not curves:
        raise TypeError(f"curves must be a non-empty dict label -> values, got {type(curves).__name__}")
    for name, value in (("xlabel", xlabel), ("ylabel", ylabel), ("title", title)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    x = [float(v) for v in x]
    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    for label, values in curves.items():
        values = [float(v) for v in values]
        if len(values) != len(x):
            raise ValueError(f"curves[{label!r}] has {len(values)} values for {len(x)} x values")
        ax.plot(x, values, (styles or {}).get(label, "-"), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


def samples_grid(grid, rows, y: Optional[torch.Tensor] = None, per_class: int = 600, size: float = 3.2):
    """A grid of :func:`samples_over_density` panels, one row per entry of ``rows`` (row name ->
    {panel title: samples [N, 2]}, the same number of panels in every row), over ``grid``'s contour
    lines. With ``y`` (the asked labels of every panel's samples) points are coloured by label and
    the top-right panel carries the legend; without, each row has its own colour. The outer axes
    are labelled x_1 and x_2. Returns the figure."""
    import matplotlib.pyplot as plt

    if not isinstance(rows, dict) or not rows or not all(isinstance(r, dict) and r for r in rows.values()):
        raise TypeError("rows must be a non-empty dict row name -> non-empty dict title -> samples")
    cols = {len(r) for r in rows.values()}
    if len(cols) != 1:
        raise ValueError(f"rows must have the same number of panels, got {sorted(cols)}")
    cols = cols.pop()
    fig, axes = plt.subplots(len(rows), cols, figsize=(size * cols, size * len(rows) + 0.4), sharex=True,
                             sharey=True, squeeze=False)
    for i, panels in enumerate(rows.values()):
        for j, (title, x) in enumerate(panels.items()):
            samples_over_density(axes[i, j], grid, x, y, title, per_class=per_class,
                                 color=None if y is not None else f"C{i}")
    for ax in axes[-1]:
        ax.set_xlabel("$x_1$")
    for ax in axes[:, 0]:
        ax.set_ylabel("$x_2$")
    if y is not None:
        axes[0, -1].legend(markerscale=5, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig
