"""Turning gamma yourself: an interactive figure for the labs whose answers are exact and fast.

:func:`explore_guidance` draws exact classifier-free guidance (Luo eq. 170 on a mixture's exact
scores) at one gamma, over the contour lines of p(x|y) and of the tilted law
p(x|y)^gamma p(x)^(1-gamma) (chapter 6), and, where ipywidgets is installed (``make lab``), adds
sliders for gamma (and for the corrector steps of chapter 6's sampler) that redraw the same figure in
place. In the built book and under nbval the cell shows the figure for the starting values and
never waits for input: the sliders only act on the figure in a live front end.
"""

from __future__ import annotations

import time
from typing import Optional

import torch

from .checks import check_int, check_mixture, check_real
from .guidance import classifier_free_eps_fn
from .metrics import spread
from .mixture import GaussianMixture, exact_eps_fn, tilted_log_prob
from .plots import _subplots
from .samplers import pc_sample
from .schedules import Schedule

GAMMA_RANGE = (0.0, 8.0)  # the sliders' range, as in the labs' sweeps
MAX_CORRECTOR_STEPS = 5  # chapter 6's K; K = 5 costs six times the steps of K = 0
LEVELS = (0.05, 0.2, 0.4, 0.6, 0.8)  # contour lines, as fractions of each law's peak density


class Sliders(dict):
    """What :func:`explore_guidance` returns: its sliders by name. They are on the page already,
    so a cell that ends with the call shows nothing more (a plain dict would print its repr)."""

    def _ipython_display_(self) -> None:
        pass


def _check(mixture: GaussianMixture, y: int, gamma: float, corrector_steps: int, n: int) -> None:
    if check_mixture(mixture).dim != 2:
        raise ValueError(f"mixture must be 2-D, got dim={mixture.dim}")
    check_int(y, "y", low=0, high=mixture.num_classes - 1)
    check_real(gamma, "gamma", low=0)
    check_int(corrector_steps, "corrector_steps", low=0)
    check_int(n, "n", low=2)


def guided_draws(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: int,
    gamma: float,
    n: int = 400,
    corrector_steps: int = 0,
    snr: float = 0.1,
    seed: int = 0,
) -> torch.Tensor:
    """n samples asked for class ``y``: eq. 170 on the mixture's exact scores, DDPM with
    ``corrector_steps`` Langevin steps per level (chapter 6; 0 is plain DDPM). The seed fixes the
    starting noise and every step's noise, so two values of gamma are paired."""
    _check(mixture, y, gamma, corrector_steps, n)
    gen = torch.Generator(device=mixture.device).manual_seed(check_int(seed, "seed", low=0))
    noise = torch.randn(n, 2, generator=gen, device=mixture.device, dtype=mixture.dtype)
    eps_fn = classifier_free_eps_fn(
        exact_eps_fn(mixture, schedule, y), exact_eps_fn(mixture, schedule), float(gamma)
    )
    return pc_sample(
        eps_fn,
        noise,
        schedule,
        corrector_steps=corrector_steps,
        snr=snr,
        generator=gen,
        progress=False,
    )


def plot_guidance(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: int,
    gamma: float,
    corrector_steps: int = 0,
    n: int = 400,
    seed: int = 0,
    lim: float = 3.0,
    cells: int = 120,
):
    """A figure of two panels: the guided samples over the contour lines of p(x|y) (what gamma = 1
    samples) and over those of the tilted law p(x|y)^gamma p(x)^(1-gamma) (what guidance would
    sample if it commuted with noise). Returns the matplotlib Figure, not shown."""
    lim = check_real(lim, "lim", low=0, low_open=True)
    cells = check_int(cells, "cells", low=2)
    start = time.perf_counter()
    x = guided_draws(mixture, schedule, y, gamma, n, corrector_steps, seed=seed)
    reference = mixture.sample(4000, y, generator=torch.Generator().manual_seed(seed + 1))[0]
    axis = torch.linspace(-lim, lim, cells, dtype=mixture.dtype)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1).to(mixture.device)
    laws = [
        ("p(x | y)", mixture.log_prob(pts, y)),
        (f"tilted law, gamma = {gamma:g}", tilted_log_prob(mixture, pts, y, float(gamma))),
    ]
    seconds = time.perf_counter() - start
    fig, axes = _subplots(1, 2, figsize=(8.4, 4.1), sharex=True, sharey=True)
    pts_cpu = x.detach().cpu()
    for ax, (name, logp) in zip(axes, laws):
        density = (logp - logp.max()).exp().reshape(cells, cells).cpu()
        # levels strictly inside (0, 1) of the peak: a level at 0 would trace underflow far away
        ax.contour(gx, gy, density, levels=LEVELS, colors="black", linewidths=0.6)
        ax.scatter(*pts_cpu.T, s=3, alpha=0.6, color=f"C{y}")
        ax.set_title(f"samples over {name}", fontsize=9)
        ax.set_xlabel("$x_1$")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    axes[0].set_ylabel("$x_2$")
    fig.suptitle(
        f"exact eq. 170, gamma = {gamma:g}, corrector steps K = {corrector_steps}: "
        f"spread {spread(x, reference):.2f} x p(x|y)'s ({seconds:.2f} s)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def explore_guidance(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: int,
    gamma: float = 4.0,
    corrector_steps: Optional[int] = None,
    n: int = 400,
    seed: int = 0,
):
    """Show :func:`plot_guidance` at ``gamma`` (and ``corrector_steps``, 0 when None) and, where
    ipywidgets is installed, a gamma slider (and a slider for the corrector steps when
    ``corrector_steps`` is given) that redraws the same figure in place when released. Returns the
    sliders (a :class:`Sliders` dict, empty without ipywidgets or outside a notebook: run as a
    script, it shows the figure with matplotlib and needs neither IPython nor ipywidgets)."""
    import matplotlib.pyplot as plt

    from .report import _in_kernel

    k = 0 if corrector_steps is None else corrector_steps
    _check(mixture, y, gamma, k, n)
    fig = plot_guidance(mixture, schedule, y, gamma, k, n, seed)
    if not _in_kernel():  # a script (a lab run with python): no sliders to show
        plt.show()
        plt.close(fig)
        return Sliders()
    from IPython.display import display

    handle = display(fig, display_id=True)
    plt.close(fig)
    try:
        import ipywidgets as widgets
    except ImportError:
        print("To move gamma yourself, open this lab in JupyterLab: make lab (README).")
        return Sliders()
    sliders = Sliders(
        {
            "gamma": widgets.FloatSlider(
                value=gamma,
                min=GAMMA_RANGE[0],
                max=max(GAMMA_RANGE[1], gamma),  # a slider clamps what lies past its end
                step=0.25,
                description="gamma",
                continuous_update=False,
            )
        }
    )
    if corrector_steps is not None:
        sliders["corrector_steps"] = widgets.IntSlider(
            value=k,
            min=0,
            max=max(MAX_CORRECTOR_STEPS, k),
            description="corrector K",
            continuous_update=False,
        )

    def redraw(_change=None) -> None:
        steps = sliders["corrector_steps"].value if "corrector_steps" in sliders else 0
        new = plot_guidance(mixture, schedule, y, float(sliders["gamma"].value), steps, n, seed)
        if handle is not None:
            handle.update(new)
        plt.close(new)

    for slider in sliders.values():
        slider.observe(redraw, names="value")
    display(widgets.HBox(list(sliders.values())))
    return sliders
