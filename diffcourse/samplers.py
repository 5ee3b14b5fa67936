"""Samplers. Each takes a noise predictor ``eps_fn(x_t, t) -> eps_hat`` (t a LongTensor[N] of
0-based steps) and knows nothing about guidance or classes: guidance wraps ``eps_fn``.

Every sampler has one signature, ``sampler(eps_fn, shape_or_noise, schedule, ..., generator=None,
progress=True, callback=None)``, as k-diffusion keeps one for all of its samplers. ``callback(step,
x_t, x0_hat)``, when given, is called once per level visited with the 0-based step, the current
x_t and the clean estimate x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) of that
step's prediction: animations and diagnostics watch a run through it instead of copying a sampler.
The samplers: :func:`ddpm_sample`, :func:`pc_sample` (DDPM with Langevin correctors),
:func:`langevin_sample` (annealed Langevin dynamics) and :func:`ddim_sample`. The steps themselves
are small public functions: :func:`ddpm_step`, :func:`ddim_step`, :func:`langevin_step`.

Arguments are checked once per run: the samplers check theirs before the first step, and a
model's range checks of t and y (which read the device) run at the run's first call of ``eps_fn``
only (:mod:`diffcourse.checks`), so the steps that follow never wait for the device.

:func:`ddim_sample` alone also takes an ``eps_fn`` that returns a pair
``(eps_for_x0, eps_for_direction)``: the first gives the clean estimate x0_hat, the second the
direction back to the next noise level. CFG++ (``guidance.cfgpp_eps_fn``) needs that split; a
single tensor means the same noise for both. The other samplers refuse a pair with a TypeError.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch

from .checks import (
    SamplingRun,
    check_alike,
    check_alpha_bar,
    check_callable,
    check_device,
    check_finite,
    check_generator,
    check_int,
    check_mapping,
    check_real,
    check_schedule,
    check_tensor,
    read_values,
    sampling_run,
)
from .report import progress_bar
from .schedules import Schedule, ddim_levels

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# for ddim_sample only: a single prediction, or (eps_for_x0, eps_for_direction)
PairEpsFn = Callable[
    [torch.Tensor, torch.Tensor], Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


def _check_shape(shape, name: str, what: str) -> tuple:
    """A shape: an iterable of positive ints (a bare int or a string is a TypeError)."""
    if isinstance(shape, (str, bytes)) or not hasattr(shape, "__iter__"):
        raise TypeError(f"{name} must be {what}, got {type(shape).__name__}")
    return tuple(check_int(s, "shape", low=1) for s in shape)


def start_noise(
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """x_T ~ N(0, I): a given tensor is returned as is (once checked finite); a shape is drawn on the
    generator's device."""
    check_generator(generator)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    if isinstance(shape_or_noise, torch.Tensor):
        if not shape_or_noise.is_floating_point():
            raise TypeError(
                f"shape_or_noise: the starting noise must be a floating-point tensor, "
                f"got dtype {shape_or_noise.dtype}"
            )
        if shape_or_noise.ndim < 1:
            raise ValueError("shape_or_noise: the starting noise needs a batch dimension")
        if shape_or_noise.numel() == 0:  # as a shape with a 0 in it is refused
            raise ValueError(
                "shape_or_noise: the starting noise holds no values, "
                f"got shape {tuple(shape_or_noise.shape)}"
            )
        # once per run: a NaN here would surface at the end as eps_fn's divergence
        return check_finite(shape_or_noise, "shape_or_noise: the starting noise")
    shape = _check_shape(shape_or_noise, "shape_or_noise", "a shape (a tuple of ints) or a tensor")
    if not shape:
        raise ValueError("shape must not be empty")
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.randn(shape, generator=generator, device=device, dtype=dtype)


# ---- one step of each sampler ------------------------------------------------------------------------


def _x0_hat(x_t: torch.Tensor, eps: torch.Tensor, a_t: float) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)  (Luo eq. 115)."""
    return (x_t - (1 - a_t) ** 0.5 * eps) / a_t**0.5


def _ddpm_update(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    beta: float,
    a_t: float,
    a_prev: Optional[float],
    noise: Optional[torch.Tensor],
) -> torch.Tensor:
    mean = (x_t - beta / (1 - a_t) ** 0.5 * eps) / (1 - beta) ** 0.5
    if a_prev is None or noise is None:
        return mean
    var = beta * (1 - a_prev) / (1 - a_t)
    return mean + var**0.5 * noise


def ddpm_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    step: int,
    schedule: Schedule,
    noise: Optional[torch.Tensor],
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} (Ho et al. 2020, Algorithm 2; the mean is Luo eq. 125, the
    variance eq. 85):

    mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) (with eps = -sqrt(1 -
    alpha_bar_t) times a score, the score form of the mean, Luo eq. 142), which is
    ``schedules.posterior_mean`` at the clean estimate of ``eps``; variance = the posterior's
    beta_tilde_t = beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t); no noise on the last step
    (``step`` = 0) or where ``noise`` is None.
    """
    step = check_int(step, "step", low=0, high=check_schedule(schedule).T - 1)
    check_alike(x_t=x_t, eps=eps, noise=noise)
    betas, alpha_bar = schedule.betas, schedule.alpha_bar
    a_prev = float(alpha_bar[step - 1]) if step > 0 else None
    return _ddpm_update(x_t, eps, float(betas[step]), float(alpha_bar[step]), a_prev, noise)


def _ddim_xi(a_t: float, a_s: float, eta: float) -> float:
    """xi = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)
    (Song, Meng & Ermon 2021, eq. 16). Up to eta = 1 xi^2 <= 1 - alpha_bar_s; past it the
    direction's variance 1 - alpha_bar_s - xi^2 can turn negative, and that eta is refused."""
    xi = eta * ((1 - a_s) / (1 - a_t) * (1 - a_t / a_s)) ** 0.5
    if 1 - a_s - xi**2 < -1e-9:
        raise ValueError(
            f"eta={eta} makes the step's variance exceed 1 - alpha_bar_s (at alpha_bar_s={a_s:.4g})"
        )
    return xi


def _ddim_update(
    x0_hat: torch.Tensor,
    eps_direction: torch.Tensor,
    a_s: float,
    xi: float,
    noise: Optional[torch.Tensor],
) -> torch.Tensor:
    x_s = a_s**0.5 * x0_hat + max(1 - a_s - xi**2, 0.0) ** 0.5 * eps_direction
    return x_s if noise is None else x_s + xi * noise


def ddim_step(
    x_t: torch.Tensor,
    eps: torch.Tensor,
    step: int,
    prev_step: Optional[int],
    schedule: Schedule,
    *,
    eta: float = 0.0,
    noise: Optional[torch.Tensor] = None,
    eps_direction: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One DDIM step from level ``step`` (t) to the earlier level ``prev_step`` (s < t; None: the
    clean data, alpha_bar_s = 1) (Song, Meng & Ermon 2021, eq. 12):

    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t),
    x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - xi^2) eps + xi z, with
    xi = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)
    (their eq. 16; their sigma_t, called xi here and in chapter 8, where sigma_t is x_t's noise
    level).

    eta = 0 is deterministic; eta = 1 between neighbouring levels is :func:`ddpm_step`. ``noise``
    is z (None: the step without its noise term); ``eps_direction`` replaces eps in the direction
    term (CFG++'s split, see :func:`ddim_sample`).
    """
    T = check_schedule(schedule).T
    step = check_int(step, "step", low=0, high=T - 1)
    if prev_step is not None:
        prev_step = check_int(prev_step, "prev_step", low=0, high=step - 1 if step else -1)
    eta = check_real(eta, "eta", low=0)
    check_alike(x_t=x_t, eps=eps, noise=noise, eps_direction=eps_direction)
    alpha_bar = schedule.alpha_bar
    a_t, a_s = float(alpha_bar[step]), 1.0 if prev_step is None else float(alpha_bar[prev_step])
    xi = _ddim_xi(a_t, a_s, eta)
    direction = eps if eps_direction is None else eps_direction
    return _ddim_update(_x0_hat(x_t, eps, a_t), direction, a_s, xi, noise if xi > 0 else None)


def langevin_step(
    x: torch.Tensor, score: torch.Tensor, alpha: float, snr: float, noise: torch.Tensor
) -> torch.Tensor:
    """One Langevin corrector step x + delta score + sqrt(2 delta) z towards the law whose score is
    ``score`` (Song et al. 2021, Algorithm 5), with the step delta = 2 alpha (snr |z| / |score|)^2 set
    by a signal-to-noise ratio, the norms averaged over the batch so that every row takes the same
    step. A score of zero (a mean norm below 1e-12) gives no direction and no step size: x is
    returned as it is, where the formula would take a step of ~1e22."""
    check_tensor(noise, "noise", floating=True)  # required here: check_alike skips a None
    check_alike(x=x, score=score, noise=noise)
    alpha = check_real(alpha, "alpha", low=0, low_open=True)
    snr = check_real(snr, "snr", low=0, low_open=True)
    z_norm = noise.flatten(1).norm(dim=1).mean()
    s_norm = score.flatten(1).norm(dim=1).mean()
    delta = 2 * alpha * (snr * z_norm / s_norm.clamp(min=1e-12)) ** 2
    delta = torch.where(s_norm > 1e-12, delta, torch.zeros_like(delta))  # no read of the device
    return x + delta * score + (2 * delta) ** 0.5 * noise


# ---- calling eps_fn inside a run -----------------------------------------------------------------------


def _call(eps_fn: PairEpsFn, x: torch.Tensor, step: int, run: SamplingRun):
    """eps_fn at one step for the whole batch, the run told which step (see checks.SamplingRun)."""
    t = torch.full((x.shape[0],), step, dtype=torch.long, device=x.device)
    with run.at(step, t):
        return eps_fn(x, t)


def _check_eps(eps, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(eps, torch.Tensor):
        raise TypeError(
            f"eps_fn must return a tensor (or, for ddim_sample, a pair of them), got {type(eps).__name__}"
        )
    if eps.shape != x.shape:
        raise ValueError(
            f"eps_fn returned shape {tuple(eps.shape)} for x_t of shape {tuple(x.shape)}"
        )
    return eps


def _predict(eps_fn: EpsFn, x: torch.Tensor, step: int, run: SamplingRun) -> torch.Tensor:
    """eps_fn at one step, one prediction, its shape checked. A pair is refused: these samplers have
    one place to put the noise, and silently taking either half would be a different method."""
    eps = _call(eps_fn, x, step, run)
    if isinstance(eps, tuple):
        raise TypeError(
            "eps_fn returned a pair (eps_for_x0, eps_for_direction), which only ddim_sample "
            "takes (CFG++ is a DDIM method); give this sampler a single prediction"
        )
    return _check_eps(eps, x)


def _predict_pair(
    eps_fn: PairEpsFn, x: torch.Tensor, step: int, run: SamplingRun
) -> Tuple[torch.Tensor, torch.Tensor]:
    """eps_fn at one step as (eps_for_x0, eps_for_direction); a single tensor serves as both."""
    out = _call(eps_fn, x, step, run)
    if not isinstance(out, tuple):
        out = (out, out)
    if len(out) != 2:
        raise TypeError(
            f"eps_fn must return a tensor or a pair of tensors, got a tuple of {len(out)}"
        )
    return _check_eps(out[0], x), _check_eps(out[1], x)


def finished(x: torch.Tensor, sampler: str, fn_name: str = "eps_fn") -> torch.Tensor:
    """A run's samples, checked once at its end (one read from the device per run): NaN or
    infinite values mean that the predictions diverged, and are a ValueError rather than samples
    that would show as an empty plot or a NaN metric far from their cause."""
    check_tensor(x, "x", floating=True)
    bad = ~torch.isfinite(x).reshape(len(x), -1).all(1)  # per sample, of any shape [N, ...]
    count = int(read_values(bad.sum())) if x.device.type != "meta" else 0
    if count:
        raise ValueError(
            f"{fn_name}: {sampler} ended with NaN or infinite values in {count} of {x.shape[0]} "
            "samples; the predictions diverged (a network that returns NaN, or a scale too large "
            "for the dtype)"
        )
    return x


def _start(
    eps_fn, shape_or_noise, schedule: Schedule, generator, callback, noisy: bool = True
) -> Tuple[torch.Tensor, List[float]]:
    """The checks every sampler makes once, before its first step; returns x_T and alpha_bar as
    Python floats (read once, not at every step). ``noisy``: the steps draw noise from
    ``generator``, which must then be on x_T's device."""
    check_callable(eps_fn, "eps_fn")
    check_schedule(schedule)
    if callback is not None:
        check_callable(callback, "callback")
    x = start_noise(shape_or_noise, generator)
    if noisy:
        check_generator(generator, device=x.device)
    return x, schedule.alpha_bar.tolist()


def _randn_like(x: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


# ---- the samplers ----------------------------------------------------------------------------------------


@torch.no_grad()
def ddpm_sample(
    eps_fn: EpsFn,
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    schedule: Schedule,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Ancestral DDPM sampling from x_T ~ N(0, I) down to x_0 (Ho et al. 2020, Algorithm 2): the
    chain of Luo eq. 32, or with a label eq. 162, one ``ddpm_step`` (eq. 125, variance eq. 85) a
    level.

    Args:
        eps_fn: the noise predictor, learned or exact.
        shape_or_noise: the shape of the batch, or the starting noise x_T itself (to pair runs).
        schedule: the noise schedule the predictor was trained with.
        generator: the source of all randomness (the starting noise when a shape is given, and
            the noise of every step), so a seed fixes the samples.
        callback: ``callback(step, x_t, x0_hat)`` at every step (see the module's docstring).
    """
    return pc_sample(
        eps_fn,
        shape_or_noise,
        schedule,
        corrector_steps=0,
        generator=generator,
        progress=progress,
        callback=callback,
    )


@torch.no_grad()
def pc_sample(
    eps_fn: EpsFn,
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    schedule: Schedule,
    corrector_steps: int = 1,
    snr: float = 0.1,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 3 with an ancestral predictor): after
    each DDPM step to x_{t-1}, ``corrector_steps`` Langevin steps (:func:`langevin_step`) on the score
    -eps_fn(x, t-1) / sqrt(1 - alpha_bar_{t-1}) at the new noise level. They pull the samples towards
    the law whose score ``eps_fn`` gives at that level, whatever the predictor did.

    Network evaluations: T for the predictor plus (T - 1) * corrector_steps. With
    ``corrector_steps=0`` this is :func:`ddpm_sample`, draw for draw. ``callback`` sees each
    predictor step.
    """
    corrector_steps = check_int(corrector_steps, "corrector_steps", low=0)
    snr = check_real(snr, "snr", low=0, low_open=True)
    x, alpha_bar = _start(eps_fn, shape_or_noise, schedule, generator, callback)
    betas = schedule.betas.tolist()
    desc = "DDPM sampling" if corrector_steps == 0 else "PC sampling"
    with sampling_run() as run:
        for step in progress_bar(
            range(schedule.T - 1, -1, -1), desc=desc, progress=progress, leave=False
        ):
            eps = _predict(eps_fn, x, step, run)
            if callback is not None:
                callback(step, x, _x0_hat(x, eps, alpha_bar[step]))
            if step == 0:  # the last step adds no noise
                x = _ddpm_update(x, eps, betas[0], alpha_bar[0], None, None)
                break
            x = _ddpm_update(
                x, eps, betas[step], alpha_bar[step], alpha_bar[step - 1], _randn_like(x, generator)
            )
            sigma = (1 - alpha_bar[step - 1]) ** 0.5
            for _ in range(corrector_steps):
                score = -_predict(eps_fn, x, step - 1, run) / sigma
                x = langevin_step(x, score, 1.0 - betas[step - 1], snr, _randn_like(x, generator))
    return finished(x, desc)


@torch.no_grad()
def langevin_sample(
    eps_fn: EpsFn,
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    schedule: Schedule,
    steps_per_level: int = 5,
    snr: float = 0.1,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1; the corrector-only sampler of
    Song et al. 2021): from x_T ~ N(0, I), at each level t = T-1, ..., 0 in turn,
    ``steps_per_level`` Langevin steps (:func:`langevin_step`) on that level's score
    -eps_fn(x, t) / sqrt(1 - alpha_bar_t). Nothing moves the samples from one level to the next but
    those steps: each level's law is close to the one before, so a few steps keep up with it. Any
    score serves, guided ones included (eq. 166, eq. 170): the sampler Luo has in mind for them.

    Network evaluations: T * steps_per_level, many more than DDPM's T for the same quality: the
    price of a sampler that uses nothing but the score. ``callback`` sees each level once, before
    its first step.
    """
    steps_per_level = check_int(steps_per_level, "steps_per_level", low=1)
    snr = check_real(snr, "snr", low=0, low_open=True)
    x, alpha_bar = _start(eps_fn, shape_or_noise, schedule, generator, callback)
    alphas = schedule.alphas.tolist()
    with sampling_run() as run:
        for step in progress_bar(
            range(schedule.T - 1, -1, -1),
            desc="annealed Langevin",
            progress=progress,
            leave=False,
        ):
            sigma = (1 - alpha_bar[step]) ** 0.5
            for k in range(steps_per_level):
                eps = _predict(eps_fn, x, step, run)
                if k == 0 and callback is not None:
                    callback(step, x, _x0_hat(x, eps, alpha_bar[step]))
                x = langevin_step(x, -eps / sigma, alphas[step], snr, _randn_like(x, generator))
    return finished(x, "annealed Langevin")


@torch.no_grad()
def ddim_sample(
    eps_fn: PairEpsFn,
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    schedule: Schedule,
    steps: Optional[int] = None,
    eta: float = 0.0,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """DDIM sampling (Song, Meng & Ermon 2021, eq. 12) on ``steps`` evenly spaced levels of the chain
    (:func:`~diffcourse.schedules.ddim_levels`), each level's step :func:`ddim_step`.

    From level t to the previous kept level s (the clean data after the last):
    x0_hat = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t),
    x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - xi^2) eps + xi z, with
    xi = eta sqrt((1 - alpha_bar_s) / (1 - alpha_bar_t)) sqrt(1 - alpha_bar_t / alpha_bar_s)
    (their eq. 16).
    eta = 0 is deterministic given x_T; eta = 1 on all T levels is ancestral DDPM, step for step.
    Network evaluations: ``steps`` (default T).

    ``eps_fn`` may return a pair ``(eps_for_x0, eps_for_direction)``: the first goes into x0_hat,
    the second into the direction term sqrt(1 - alpha_bar_s - xi^2) eps. That is the split CFG++
    makes (Chung et al. 2025, arXiv:2406.08070); a single tensor is used for both, as in plain DDIM.
    """
    T = check_schedule(schedule).T
    levels = ddim_levels(T, T if steps is None else steps)
    eta = check_real(eta, "eta", low=0)
    x, alpha_bar = _start(eps_fn, shape_or_noise, schedule, generator, callback, eta > 0)
    ends = [alpha_bar[s] for s in levels[1:]] + [1.0]  # alpha_bar_s of each step; 1 after the last
    # every step's xi before the run, so that an eta too large for any step stops it at once
    xis = [_ddim_xi(alpha_bar[t], a_s, eta) for t, a_s in zip(levels, ends)]
    with sampling_run() as run:
        for i, step in enumerate(
            progress_bar(levels, desc="DDIM sampling", progress=progress, leave=False)
        ):
            eps_x0, eps_dir = _predict_pair(eps_fn, x, step, run)
            x0_hat = _x0_hat(x, eps_x0, alpha_bar[step])
            if callback is not None:
                callback(step, x, x0_hat)
            xi = xis[i]
            x = _ddim_update(
                x0_hat, eps_dir, ends[i], xi, _randn_like(x, generator) if xi > 0 else None
            )
    return finished(x, "DDIM sampling")


# ---- paired inputs: the same labels and starting noise for every method compared ---------------------


def balanced_labels(num_classes: int, per_class: int, device=None) -> torch.Tensor:
    """``[0]*per_class + [1]*per_class + ... + [C-1]*per_class`` as a LongTensor: every class asked
    for equally often, in blocks (so ``x[y == c]`` is a contiguous block)."""
    num_classes, per_class = (
        check_int(num_classes, "num_classes", low=1),
        check_int(per_class, "per_class", low=1),
    )
    return torch.arange(num_classes, device=check_device(device)).repeat_interleave(per_class)


def seeded_noise(
    shape: Sequence[int], seed: int, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Starting noise x_T ~ N(0, I) of ``shape`` drawn from a generator seeded with ``seed`` on
    ``device``: the same seed gives the same noise, so runs that differ only in their method pair up."""
    shape = _check_shape(shape, "shape", "a sequence of ints")
    seed = check_int(seed, "seed")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch dtype, got {dtype}")
    device = check_device(device) or torch.device("cpu")
    return torch.randn(
        shape,
        generator=torch.Generator(device=device).manual_seed(seed),
        device=device,
        dtype=dtype,
    )


def labels_and_noise(
    num_classes: int,
    per_class: int,
    sample_shape: Sequence[int],
    seed: int = 1,
    device=None,
    dtype: torch.dtype = torch.float32,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(y, x_T): :func:`balanced_labels` and their :func:`seeded_noise` of shape
    ``[num_classes * per_class, *sample_shape]``, the paired inputs of a guidance sweep."""
    y = balanced_labels(num_classes, per_class, device)
    return y, seeded_noise((y.shape[0], *sample_shape), seed, device, dtype)


def ddpm_sample_each(
    eps_fns: dict[str, EpsFn],
    noise: torch.Tensor,
    schedule: Schedule,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, torch.Tensor]:
    """``{name: samples}``: :func:`ddpm_sample` (Ho et al. 2020, Algorithm 2) run with each noise
    predictor of ``eps_fns`` from the same starting noise ``noise`` and with the same noise at
    every step (a generator on noise's device seeded with ``seed`` for each run): paired runs, so
    their samples differ by the predictors alone (a learned one against the exact one, a weak
    model against a strong one)."""
    check_mapping(eps_fns, "eps_fns", "mapping name -> eps_fn", "eps_fn")
    for name, fn in eps_fns.items():
        check_callable(fn, f"eps_fns[{name!r}]")
    check_tensor(noise, "noise", floating=True)
    seed = check_int(seed, "seed")
    return {
        name: ddpm_sample(
            fn, noise, schedule, torch.Generator(noise.device).manual_seed(seed), progress
        )
        for name, fn in eps_fns.items()
    }


def ddim_gap(
    eps_a: PairEpsFn,
    eps_b: PairEpsFn,
    noise: torch.Tensor,
    schedule: Schedule,
    steps: Optional[int] = None,
) -> float:
    """The largest absolute difference between two deterministic DDIM runs (eta = 0, Song et al.
    2021 eq. 12, :func:`ddim_sample`) on ``steps`` levels from the same starting ``noise``, one
    with ``eps_a`` and one with ``eps_b``: about the float rounding where two rules are the same
    sampler (an identity between guidance rules), larger where they differ."""
    check_tensor(noise, "noise", floating=True)
    a = ddim_sample(eps_a, noise, schedule, steps, progress=False)
    b = ddim_sample(eps_b, noise, schedule, steps, progress=False)
    return (a - b).abs().max().item()


# ---- chapter 8: one sampler as a function of its starting noise, and DDIM's dropped variance ------


def sampler_fn(
    eps_fn: PairEpsFn, schedule: Schedule, steps: Optional[int] = None, eta: float = 0.0
) -> Callable[[torch.Tensor, Optional[torch.Generator]], torch.Tensor]:
    """``sample(noise, generator) -> x_0``: ancestral DDPM on all T levels when ``steps`` is None
    (Ho et al. 2020, Algorithm 2; ``eta`` unused), else DDIM on ``steps`` levels with ``eta``
    (Song, Meng & Ermon 2021, eq. 12), both without a progress bar. The form
    :func:`~diffcourse.metrics.image_metrics_over_seeds` takes, so that samplers compared on the
    same noise and generator seeds differ only by their rule."""
    check_callable(eps_fn, "eps_fn")
    check_schedule(schedule)
    if steps is not None:
        steps = check_int(steps, "steps", low=1, high=schedule.T)
    eta = check_real(eta, "eta", low=0)

    def sample(noise: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        if steps is None:
            return ddpm_sample(eps_fn, noise, schedule, generator=generator, progress=False)
        return ddim_sample(eps_fn, noise, schedule, steps, eta, generator, progress=False)

    return sample


def ddim_x0_coefficient(alpha_bar_t, alpha_bar_s, eta: float):
    """a, the coefficient of x_0 in the mean of DDIM's q_xi(x_s | x_t, x_0) once x_t is written as
    sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Song et al. 2021, eq. 7 and 12; chapter 8):
    a = sqrt(alpha_bar_s) - sqrt(1 - alpha_bar_s - xi^2) sqrt(alpha_bar_t / (1 - alpha_bar_t)),
    xi^2 = eta^2 (1 - alpha_bar_s) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_s). One DDIM
    step drops the variance a^2 Cov[x_0 | x_t]. Elementwise on floats or tensors (s < t)."""
    eta = check_real(eta, "eta", low=0)
    alpha_bar_t = check_alpha_bar(alpha_bar_t, "alpha_bar_t", zero=False, one=False)
    alpha_bar_s = check_alpha_bar(alpha_bar_s, "alpha_bar_s", zero=False)
    if torch.as_tensor(alpha_bar_s <= alpha_bar_t).any():  # s is the earlier, less noisy level
        raise ValueError("alpha_bar_s must exceed alpha_bar_t (the step goes from t to s < t)")
    xi2 = eta**2 * (1 - alpha_bar_s) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_s)
    rest = 1 - alpha_bar_s - xi2  # the direction's variance; past 0 the root is complex
    if torch.as_tensor(rest < -1e-9).any():
        raise ValueError(f"eta={eta} makes the step's variance exceed 1 - alpha_bar_s")
    rest = rest.clamp(min=0) if isinstance(rest, torch.Tensor) else max(rest, 0.0)  # rounding
    root = (alpha_bar_t / (1 - alpha_bar_t)) ** 0.5
    return alpha_bar_s**0.5 - rest**0.5 * root


def ddim_x0_coefficients(schedule: Schedule, steps: int, eta: float) -> torch.Tensor:
    """:func:`ddim_x0_coefficient` (float64) at every step of a DDIM run of ``steps`` levels
    (:func:`~diffcourse.schedules.ddim_levels`) from one visited level to the next: ``steps - 1``
    values; the last step, to the clean data, has a = 1 and is left out."""
    check_schedule(schedule)
    levels = ddim_levels(schedule.T, check_int(steps, "steps", low=2, high=schedule.T))
    alpha_bar = schedule.alpha_bar.double()
    return ddim_x0_coefficient(alpha_bar[levels[:-1]], alpha_bar[levels[1:]], eta)


def seeded_sample(
    eps_fn: EpsFn,
    noise: torch.Tensor,
    schedule: Schedule,
    seed: int = 2,
    corrector_steps: int = 0,
    snr: float = 0.1,
    callback: Optional[Callback] = None,
    progress: bool = False,
) -> torch.Tensor:
    """Samples of ``eps_fn`` from the starting noise ``noise``, the noise of every step drawn from a
    generator seeded with ``seed`` on ``noise``'s device: :func:`pc_sample` with
    ``corrector_steps`` Langevin steps per level (0: ancestral DDPM, Ho et al. 2020, Algorithm 2).
    Two predictors run with the same noise and seed differ only by what they predict, so a
    guidance sweep compares methods, not luck."""
    check_tensor(noise, "noise", floating=True)
    seed = check_int(seed, "seed")
    gen = torch.Generator(device=noise.device).manual_seed(seed)
    return pc_sample(eps_fn, noise, schedule, corrector_steps, snr, gen, progress, callback)
