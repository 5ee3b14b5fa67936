"""diffcourse: the tested code behind the course on conditional diffusion and guidance."""
from . import data, device, explore, guidance, metrics, mixture, models, plots, samplers, schedules, targets, train
from .device import budget, get_device
from .mixture import GaussianMixture, exact_classifier_grad_fn, exact_eps_fn
from .schedules import Schedule, cosine_schedule, linear_schedule, q_sample

__version__ = "0.1.0"
