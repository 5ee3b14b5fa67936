"""diffcourse: the tested code behind the course on conditional diffusion and guidance."""

from importlib import import_module

from . import (  # chapter 10: captions and low-resolution images as conditions
    checks,
    conditioned,
    data,
    device,
    explore,
    flow,
    guidance,
    metrics,
    mixture,
    models,
    plots,
    report,
    samplers,
    schedules,
    targets,
    text,
)
from .device import budget, get_device
from .mixture import (
    GaussianMixture,
    exact_cfg_eps_fn,
    exact_cfg_velocity_fn,
    exact_classifier_grad_fn,
    exact_eps_fn,
    exact_velocity_fn,
)
from .schedules import Schedule, cosine_schedule, ddim_levels, linear_schedule, q_sample

__version__ = "0.1.0"
__all__ = [
    "checks",
    "conditioned",
    "data",
    "device",
    "explore",
    "flow",
    "guidance",
    "metrics",
    "mixture",
    "models",
    "plots",
    "report",
    "samplers",
    "schedules",
    "targets",
    "text",
    "bench",
    "recipes",
    "train",
    "budget",
    "get_device",
    "GaussianMixture",
    "exact_cfg_eps_fn",
    "exact_classifier_grad_fn",
    "exact_eps_fn",
    "exact_cfg_velocity_fn",
    "exact_velocity_fn",
    "Schedule",
    "cosine_schedule",
    "ddim_levels",
    "linear_schedule",
    "q_sample",
]

# Imported on first use (diffcourse.train, diffcourse.recipes, diffcourse.bench), so that
# `python -m diffcourse.train` does not find its own module imported already.
_LAZY = ("bench", "recipes", "train")


def __getattr__(name: str):
    if name in _LAZY:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
