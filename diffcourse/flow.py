"""Flow matching (chapter 11): the rectified-flow path, its velocity, ODE samplers for it, and
guidance in velocity form: eq. 170, CFG-Zero* and guidance distillation.

Notation (the course's, for this chapter only): ``t`` is a float tensor [N] in [0, 1] with t = 1 the
noise, x_t = (1 - t) x_0 + t eps, and the network predicts the velocity v = eps - x_0 (the convention
of Stable Diffusion 3 and FLUX; Liu et al. 2023, Lipman et al. 2023, Esser et al. 2024). Since
E[eps | x_t] = -t grad log p_t(x_t), the best velocity is affine in the score at each t,

    v*(x_t, t) = -(x_t + t grad log p_t(x_t)) / (1 - t),                 (:func:`score_to_velocity`)

so eq. 170 on velocities is eq. 170 on scores. Samplers integrate dx/dt = v from t = 1 down to
t = 0 and take a ``v_fn(x_t, t)`` the way the diffusion samplers take an ``eps_fn``; guidance wraps
``v_fn``. The exact velocity of a Gaussian mixture is ``mixture.exact_velocity_fn``.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .checks import (
    check_alike,
    check_bool,
    check_callable,
    check_finite,
    check_int,
    check_labels,
    check_levels,
    check_mixture,
    check_module,
    check_real,
    check_reals,
    check_schedule,
    check_tensor,
    read_values,
    sampling_run,
    values_checked_already,
)
from .report import progress_bar
from .samplers import finished, start_noise

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[int, torch.Tensor, torch.Tensor], None]


# ---- the path ------------------------------------------------------------------------------------------


def check_times(t: torch.Tensor, n: int, name: str = "t") -> torch.Tensor:
    """Continuous times: a floating-point tensor of shape (n,), every entry in [0, 1] (t = 1 the
    noise). The range is read from the device once per sampling run, as ``checks.check_steps`` does."""
    check_tensor(t, name, floating=True, shape=(n,))
    if n and t.device.type != "meta" and not values_checked_already():
        low, high = read_values(torch.stack(torch.aminmax(t)))
        if not 0 <= low <= high <= 1:  # NaN fails every comparison
            raise ValueError(
                f"{name} must lie in [0, 1] (t = 1 is the noise), got values in {low}..{high}"
            )
    return t


def _gamma(gamma) -> float:
    return check_real(gamma, "gamma", low=0)


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """t [N] shaped to broadcast against ``like`` (batch first), in its dtype and on its device."""
    return t.to(like.device, like.dtype).reshape(-1, *[1] * (like.ndim - 1))


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps: the straight path from the data (t = 0) to the noise (t = 1)
    (rectified flow, Liu et al. 2023; the optimal-transport path of Lipman et al. 2023 with
    sigma_min = 0). Its velocity dx_t/dt = eps - x_0 is the network's target."""
    check_alike(x0=x0, eps=eps)
    c = _col(check_times(t, x0.shape[0]), x0)
    return (1 - c) * x0 + c * eps


def flow_matching_loss(
    model: nn.Module,
    x0: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    y: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The conditional flow-matching loss E || v_theta(x_t, t[, y]) - (eps - x_0) ||^2 (Lipman et al.
    2023, with their straight path; Liu et al. 2023), averaged over the batch and the
    coordinates. Its minimiser is v*(x_t, t) = E[eps - x_0 | x_t (, y)], for the same reason the
    noise loss of chapter 1 is minimised by E[eps | x_t]: a mean squared error is least at the
    conditional mean. ``y`` may hold the null label (condition dropout is the caller's choice)."""
    check_tensor(x0, "x0", floating=True, nonempty=True)  # a mean over no rows is NaN
    x_t = interpolate(x0, eps, t)
    v = model(x_t, t) if y is None else model(x_t, t, y)
    return torch.mean((v - (eps - x0)) ** 2)


# ---- conversions: the velocity is affine in x0, eps and the score at each t ------------------------


def velocity_to_x0(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x0_hat = x_t - t v: from x_t = (1 - t) x_0 + t eps and v = eps - x_0."""
    check_alike(x_t=x_t, v=v)
    return x_t - _col(check_times(t, x_t.shape[0]), x_t) * v


def velocity_to_eps(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """eps_hat = x_t + (1 - t) v, the other half of the same two equations."""
    check_alike(x_t=x_t, v=v)
    return x_t + (1 - _col(check_times(t, x_t.shape[0]), x_t)) * v


def _below_one(t: torch.Tensor, n: int) -> torch.Tensor:
    check_times(t, n)
    if n and read_values((t >= 1).any()):
        raise ValueError("t must be < 1 here: at t = 1 the noise alone does not fix the velocity")
    return t


def eps_to_velocity(eps: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = (eps - x_t) / (1 - t), for t < 1: x_0 = (x_t - t eps) / (1 - t) put into v = eps - x_0."""
    check_alike(x_t=x_t, eps=eps)
    return (eps - x_t) / (1 - _col(_below_one(t, x_t.shape[0]), x_t))


def score_to_velocity(score: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """v = -(x_t + t score) / (1 - t), for t < 1: Tweedie's formula on this path gives
    E[eps | x_t] = -t score, and :func:`eps_to_velocity` does the rest. Affine in the score with
    the same coefficients for every branch, so eq. 170 commutes with it."""
    check_alike(x_t=x_t, score=score)
    c = _col(_below_one(t, x_t.shape[0]), x_t)
    return -(x_t + c * score) / (1 - c)


def velocity_to_score(v: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """score = -(x_t + (1 - t) v) / t, for t > 0: the inverse of :func:`score_to_velocity`."""
    check_alike(x_t=x_t, v=v)
    c = _col(check_times(t, x_t.shape[0]), x_t)
    if x_t.shape[0] and read_values((c <= 0).any()):
        raise ValueError("t must be > 0 here: at t = 0 the velocity does not fix the score")
    return -(x_t + (1 - c) * v) / c


def matched_time(alpha_bar) -> Tuple[torch.Tensor, torch.Tensor]:
    """The time t of this path that has the noise level alpha_bar of chapters 1-8, and the scale c
    between the two: x_t(flow) = c x(alpha_bar), with t = s / (a + s) and c = 1 / (a + s) for
    a = sqrt(alpha_bar), s = sqrt(1 - alpha_bar). Both paths carry the same x_0 and eps, so
    E[eps | x_t(flow)] = E[eps | x(alpha_bar)] at matched points: a noise predictor of chapter 5
    gives the velocity (eps - x_t) / (1 - t)."""
    if not isinstance(alpha_bar, (numbers.Real, torch.Tensor)) or isinstance(alpha_bar, bool):
        raise TypeError(f"alpha_bar must be a number or a tensor, got {type(alpha_bar).__name__}")
    a_bar = torch.as_tensor(alpha_bar, dtype=torch.float64)
    if not bool(((a_bar > 0) & (a_bar <= 1)).all()):
        raise ValueError("alpha_bar must lie in (0, 1]")
    a, s = a_bar.sqrt(), (1 - a_bar).sqrt()
    return s / (a + s), 1 / (a + s)


# ---- samplers: Euler and Heun on dx/dt = v, from t = 1 down to t = 0 ----------------------------------


def flow_times(steps: int, t_start: float = 1.0) -> List[float]:
    """``steps`` equal steps from ``t_start`` down to 0: a list of steps + 1 times."""
    steps = check_int(steps, "steps", low=1)
    t_start = check_real(t_start, "t_start", low=0, low_open=True, high=1)
    return [t_start * (1 - i / steps) for i in range(steps + 1)]


def _grid(steps: Optional[int], times: Optional[Sequence[float]]) -> List[float]:
    if times is None:
        return flow_times(50 if steps is None else steps)
    if steps is not None:
        raise ValueError("steps: give steps or times, not both")
    grid = check_reals(times, "times", low=0, high=1)
    if len(grid) < 2 or any(b >= a for a, b in zip(grid, grid[1:])):
        raise ValueError(
            "times must hold at least 2 times in [0, 1], strictly decreasing (t = 1 is the noise)"
        )
    return grid


def _velocity(v_fn: VelocityFn, x: torch.Tensor, t: float, run, step: int) -> torch.Tensor:
    tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
    with run.at(step, None):  # None: no diffusion step here, checks.known_step stays silent
        v = v_fn(x, tt)
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"v_fn must return a torch.Tensor, got {type(v).__name__}")
    if v.shape != x.shape:
        raise ValueError(
            f"v_fn must return a tensor of x_t's shape {tuple(x.shape)}, got {tuple(v.shape)}"
        )
    return v


@torch.no_grad()
def _solve(
    v_fn: VelocityFn,
    shape_or_noise,
    steps,
    times,
    generator,
    progress: bool,
    callback: Optional[Callback],
    heun: bool,
) -> torch.Tensor:
    """The loop both samplers share; arguments checked once, value checks of the callees at the
    run's first call only (``checks.sampling_run``)."""
    check_callable(v_fn, "v_fn")
    if callback is not None:
        check_callable(callback, "callback")
    grid = _grid(steps, times)
    x = start_noise(shape_or_noise, generator)
    name = "Heun" if heun else "Euler"
    with sampling_run() as run:
        for i in progress_bar(
            range(len(grid) - 1), desc=f"{name} sampling", progress=progress, leave=False
        ):
            t, s = grid[i], grid[i + 1]
            v = _velocity(v_fn, x, t, run, i)
            if callback is not None:
                callback(i, x, x - t * v)  # x0_hat = x_t - t v
            x_next = x + (s - t) * v  # Euler: one evaluation per step
            if heun:  # Heun: the trapezoid with the slope at the end
                x_next = x + (s - t) * 0.5 * (v + _velocity(v_fn, x_next, s, run, i))
            x = x_next
    return finished(x, f"{name} sampling", "v_fn")


def euler_sample(
    v_fn: VelocityFn,
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    steps: Optional[int] = None,
    times: Optional[Sequence[float]] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Euler's method on the flow ODE dx/dt = v(x, t) from the noise at ``times[0]`` (1 by default)
    down to ``times[-1]`` (0): x_s = x_t + (s - t) v(x_t, t) (Liu et al. 2023; Lipman et al. 2023).

    ``steps`` equal steps (50 by default) or an explicit decreasing grid ``times``; one evaluation of
    ``v_fn`` per step. ``shape_or_noise`` is the starting noise or its shape (drawn from
    ``generator``). ``callback(step, x_t, x0_hat)`` is called at each step before it moves, with
    x0_hat = x_t - t v. With an exact velocity and matched levels this is DDIM with eta = 0
    (chapter 8) up to the scale of :func:`matched_time`.
    """
    return _solve(v_fn, shape_or_noise, steps, times, generator, progress, callback, heun=False)


def heun_sample(
    v_fn: VelocityFn,
    shape_or_noise: Union[Sequence[int], torch.Tensor],
    steps: Optional[int] = None,
    times: Optional[Sequence[float]] = None,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
    callback: Optional[Callback] = None,
) -> torch.Tensor:
    """Heun's second-order method on the same ODE (Karras et al. 2022, Algorithm 1, applied to the
    velocity): an Euler step to x', then the step redone with the mean of the slopes at both ends,
    x_s = x_t + (s - t) (v(x_t, t) + v(x', s)) / 2. Two evaluations of ``v_fn`` per step, on every
    step (the velocity is finite at t = 0, so the last step needs no exception). Arguments as
    :func:`euler_sample`."""
    return _solve(v_fn, shape_or_noise, steps, times, generator, progress, callback, heun=True)


# ---- guidance in velocity form ---------------------------------------------------------------------


def velocity_cfg_fn(cond_fn: VelocityFn, uncond_fn: VelocityFn, gamma: float) -> VelocityFn:
    """Classifier-free guidance (Luo eq. 170) on velocities: gamma v(x_t, t, y) + (1 - gamma) v(x_t, t, null).

    By :func:`score_to_velocity` each branch is -(x_t + t score) / (1 - t); the weights add up to one,
    so the x_t terms add up to one x_t and the combination is the velocity of eq. 170's score. Two
    calls per step, at every gamma; for a network with a null label,
    ``guidance.batched_cfg_eps_fn(model, y, gamma)`` makes one stacked pass (its rule is eq. 170 for
    any kind of prediction)."""
    check_callable(cond_fn, "cond_fn"), check_callable(uncond_fn, "uncond_fn")
    gamma = _gamma(gamma)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return gamma * cond_fn(x_t, t) + (1 - gamma) * uncond_fn(x_t, t)

    return guided


def optimized_scale(cond: torch.Tensor, uncond: torch.Tensor) -> torch.Tensor:
    """CFG-Zero*'s scale (Fan et al. 2025, arXiv:2503.18886, who call it s*; chapter 11 writes omega,
    keeping s for the score): per sample, the omega that minimises || v_c - omega v_u ||^2, the
    least-squares coefficient omega* = <v_c, v_u> / ||v_u||^2 over all non-batch dimensions, shaped
    [N, 1, ...] to broadcast. Where v_u = 0 (no direction to project on) omega* = 1."""
    check_alike(cond=cond, uncond=uncond)
    c, u = cond.flatten(1), uncond.flatten(1)
    norm2 = (u * u).sum(1)
    omega = torch.where(
        norm2 > 0,
        (c * u).sum(1) / norm2.clamp(min=torch.finfo(u.dtype).tiny),
        torch.ones_like(norm2),
    )
    return omega.reshape(-1, *[1] * (cond.ndim - 1))


def cfg_zero_star(
    cond: torch.Tensor, uncond: torch.Tensor, gamma: float, scale: bool = True
) -> torch.Tensor:
    """CFG-Zero*'s guided velocity (Fan et al. 2025): gamma v_c + (1 - gamma) omega* v_u, that
    is omega* v_u + gamma (v_c - omega* v_u), with omega* from :func:`optimized_scale`;
    ``scale=False`` puts omega* = 1, which is eq. 170. The unconditional branch is first shrunk to
    its best fit of the conditional one."""
    gamma = _gamma(gamma)
    omega = optimized_scale(cond, uncond) if check_bool(scale, "scale") else 1.0
    return gamma * cond + (1 - gamma) * omega * uncond


def zero_init_time(steps: int, zeroed: int) -> float:
    """The ``t_zero`` of :func:`cfg_zero_star_fn` that zeroes the first ``zeroed`` of ``steps`` equal
    Euler steps: halfway between the last zeroed time and the next, 1 - (zeroed - 1/2) / steps
    (1.0, nothing zeroed, for zeroed = 0). Fan et al. suggest about 4% of the steps."""
    steps = check_int(steps, "steps", low=1)
    zeroed = check_int(zeroed, "zeroed", low=0, high=steps)
    return 1.0 if zeroed == 0 else 1 - (zeroed - 0.5) / steps


def cfg_zero_star_fn(
    cond_fn: VelocityFn,
    uncond_fn: VelocityFn,
    gamma: float,
    scale: bool = True,
    t_zero: float = 1.0,
) -> VelocityFn:
    """CFG-Zero* (Fan et al. 2025) as a ``v_fn``: its two parts, each of which can be switched off.

    - the optimised scale (``scale``): :func:`cfg_zero_star`, eq. 170 with v_u replaced by omega* v_u;
    - zero-init: the velocity is 0 wherever t > ``t_zero``, so the sampler does not move over the
      first steps and neither branch is evaluated there (:func:`zero_init_time` turns a number of
      Euler steps into t_zero). ``t_zero = 1`` zeroes nothing.

    ``scale=False, t_zero=1`` is :func:`velocity_cfg_fn`. With :func:`euler_sample` on
    ``flow_times(S)`` and ``t_zero = zero_init_time(S, K)``, zero-init alone is the plain sampler on
    ``flow_times(S)[K:]``: started at the grid time t_K < 1 from the same pure noise, the law of
    t = 1. (With :func:`heun_sample` the last zeroed step differs: its corrector is evaluated at
    t_K and moves the point half a step.)
    """
    check_callable(cond_fn, "cond_fn"), check_callable(uncond_fn, "uncond_fn")
    gamma, scale = _gamma(gamma), check_bool(scale, "scale")
    t_zero = check_real(t_zero, "t_zero", low=0, high=1)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        zero = check_times(t, x_t.shape[0]) > t_zero  # integer steps would all look > t_zero
        if bool(zero.all()):
            return torch.zeros_like(x_t)  # zero-init: no network pass at all
        v = cfg_zero_star(cond_fn(x_t, t), uncond_fn(x_t, t), gamma, scale)
        return (
            torch.where(_col(zero, x_t).bool(), torch.zeros_like(v), v) if bool(zero.any()) else v
        )

    return guided


class CountedFn:
    """A prediction callable (``v_fn`` or ``eps_fn``) that counts its calls in ``calls``: the network
    evaluations a sampling run costs, each branch of a guidance rule wrapped on its own."""

    def __init__(self, fn: VelocityFn):
        self.fn, self.calls = check_callable(fn, "fn"), 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.fn(x_t, t)


# ---- guidance distillation (Meng et al. 2023) -----------------------------------------------------------


def check_gammas(gamma: torch.Tensor, n: int, name: str = "gamma") -> torch.Tensor:
    """Guidance scales, one per row: a floating-point tensor of shape (n,), finite and >= 0 (read
    once per sampling run)."""
    check_tensor(gamma, name, floating=True, shape=(n,))
    if n and gamma.device.type != "meta" and not values_checked_already():
        low, high = read_values(torch.stack(torch.aminmax(gamma)))
        if not (0 <= low and math.isfinite(high)):
            raise ValueError(f"{name} must be finite and >= 0, got values in {low}..{high}")
    return gamma


@torch.no_grad()
def guided_velocity_target(
    teacher: nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor
) -> torch.Tensor:
    """The teacher's guided velocity gamma v(x_t, t, y) + (1 - gamma) v(x_t, t, null), each row at its
    own gamma [N], from one stacked pass of a conditional ``teacher`` with a null label: the target
    guidance distillation trains its student on (Meng et al. 2023, stage one, in velocity form). At
    gamma = 1 the unconditional half has weight 0 and the target is the conditional velocity."""
    check_module(teacher, "teacher"), check_tensor(x_t, "x_t", floating=True)
    if getattr(teacher, "null_label", None) is None:
        raise ValueError("teacher must be a conditional model with a null label (num_classes > 0)")
    n = x_t.shape[0]
    y = check_labels(y, n, teacher.num_classes, x_t.device, name="y")
    g = _col(check_gammas(gamma, n), x_t)
    null = torch.full_like(y, teacher.null_label)
    cond, uncond = teacher(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([y, null])).chunk(2)
    return g * cond + (1 - g) * uncond


def distillation_loss(
    student: nn.Module,
    teacher: nn.Module,
    x0: torch.Tensor,
    eps: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    gamma: torch.Tensor,
) -> torch.Tensor:
    """Guidance distillation (Meng et al., CVPR 2023, arXiv:2210.03142, stage one): a student that
    takes gamma as an input learns the teacher's guided velocity in one pass,
    E || v_student(x_t, t, y, gamma) - [gamma v_c + (1 - gamma) v_u]_teacher ||^2, with x_t on the
    path of the data, and gamma drawn by the caller over the range the student should serve."""
    check_tensor(x0, "x0", floating=True, nonempty=True)  # a mean over no rows is NaN
    x_t = interpolate(x0, eps, t)
    target = guided_velocity_target(teacher, x_t, t, y, gamma)
    return torch.mean((student(x_t, t, y, gamma) - target) ** 2)


def student_velocity_fn(student: nn.Module, y: torch.Tensor, gamma: float) -> VelocityFn:
    """A distilled student at one guidance scale as a sampler's ``v_fn``: one pass per evaluation,
    where eq. 170 needs two (or a stacked pass of twice the batch)."""
    gamma = _gamma(gamma)
    return lambda x_t, t: student(x_t, t, y, torch.full_like(t, gamma))


# ---- how close is close ---------------------------------------------------------------------------------


@torch.no_grad()
def relative_velocity_error(
    v_fn: VelocityFn,
    reference_fn: VelocityFn,
    mixture,
    times: Sequence[float],
    n: int = 4000,
    y: Optional[int] = None,
    seed: int = 0,
) -> torch.Tensor:
    """At each t of ``times``: RMS(v_fn - reference_fn) / RMS(reference_fn) over x_t on the path of the
    mixture's data, x_t = (1 - t) x_0 + t eps, x_0 from p(x) or from p(x | y). Chapter 1's score error
    in velocity form: a ratio of root-mean-squares, so points where the velocity is near zero do not
    blow it up. Both callables are called on a batch of ``n`` rows (build them for n rows of label y)."""
    check_callable(v_fn, "v_fn"), check_callable(reference_fn, "reference_fn")
    check_mixture(mixture)
    times, n = check_reals(times, "times", low=0, high=1), check_int(n, "n", low=1)
    gen = torch.Generator().manual_seed(check_int(seed, "seed"))
    out = []
    for t in times:
        x0 = mixture.sample(n, y, generator=gen)[0]
        eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype).to(x0.device)
        tt = torch.full((n,), float(t), dtype=x0.dtype, device=x0.device)
        x_t = interpolate(x0, eps, tt)
        ref = reference_fn(x_t, tt)
        out.append(((v_fn(x_t, tt) - ref).pow(2).mean() / ref.pow(2).mean()).sqrt().item())
    return torch.tensor(out)


# ---- training, through the course's training loop (diffcourse.train) ------------------------------------


def train_velocity(
    model: nn.Module,
    data,
    steps: int,
    *,
    batch_size: int = 512,
    lr: float = 2e-3,
    p_uncond: Optional[float] = None,
    seed: int = 0,
    progress: bool = True,
    warmup: int = 100,
    resume=None,
    checkpoint=None,
    save_every: int = 0,
    stop_after: Optional[int] = None,
    config: Optional[dict] = None,
) -> List[float]:
    """Fit a velocity network by :func:`flow_matching_loss`, t uniform in [0, 1], with condition
    dropout ``p_uncond`` (default 0.1 for a conditional model, as ``train.train_denoiser``), in the
    loop every trainer of the course shares (``train.fit``: AdamW, warm-up and cosine decay,
    clipping, DDP, checkpoints; the settings are ``train.Settings``'s). Returns the loss of every step."""
    # imported here: train imports mixture, which imports this module
    from .train import Settings, _check_data_labels, dropout_rate, fit

    settings = Settings.of(locals())  # steps, batch_size, lr, ... as passed
    check_module(model)
    conditional = getattr(model, "num_classes", 0) > 0
    p_uncond = dropout_rate(p_uncond, conditional)
    if conditional:  # a label C would train the null branch, one above it fail mid-run
        _check_data_labels(data, model.num_classes, "model")

    def loss(net: nn.Module, x0: torch.Tensor, y: Optional[torch.Tensor], draws) -> torch.Tensor:
        t, eps = draws.uniform().to(x0.dtype), draws.normal(x0)  # t ~ U[0, 1], eps ~ N(0, I)
        if not conditional:
            return flow_matching_loss(net, x0, eps, t)
        if y is None:
            raise ValueError("data: a conditional model needs labelled data (x0, y)")
        drop = draws.uniform() < p_uncond  # condition dropout
        return flow_matching_loss(net, x0, eps, t, torch.where(drop, model.null_label, y))

    return fit(model, data, loss, settings, resume=resume, desc="training velocity")


def train_student(
    student: nn.Module,
    teacher: nn.Module,
    data,
    steps: int,
    *,
    gamma_range: Tuple[float, float] = (1.0, 4.0),
    batch_size: int = 512,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
    warmup: int = 50,
    resume=None,
    checkpoint=None,
    save_every: int = 0,
    stop_after: Optional[int] = None,
    config: Optional[dict] = None,
) -> List[float]:
    """Guidance distillation (Meng et al. 2023): fit ``student`` (a :class:`~diffcourse.models.VelocityMLP`
    with ``guidance_input=True``) by :func:`distillation_loss`, gamma uniform over ``gamma_range``,
    the frozen ``teacher`` giving both branches of the target, in ``train.fit`` (the other arguments
    are :func:`train_velocity`'s). Returns the loss of every step."""
    from .train import Settings, _check_data_labels, fit

    settings = Settings.of(locals())  # steps, batch_size, lr, ... as passed
    check_module(student, "student")
    check_module(teacher, "teacher")
    _check_data_labels(data, getattr(teacher, "num_classes", 0), "teacher")
    if not getattr(student, "guidance_input", False):
        raise ValueError(
            "student must take gamma as an input (VelocityMLP(..., guidance_input=True))"
        )
    if (
        isinstance(gamma_range, (str, bytes))
        or not hasattr(gamma_range, "__len__")
        or len(gamma_range) != 2
    ):
        raise TypeError(f"gamma_range must be a pair (low, high), got {gamma_range!r}")
    low, high = (
        check_real(gamma_range[0], "gamma_range", low=0),
        check_real(gamma_range[1], "gamma_range", low=0),
    )
    if not low <= high:
        raise ValueError(f"gamma_range must be (low, high) with low <= high, got {gamma_range}")
    teacher.eval()

    def loss(net: nn.Module, x0: torch.Tensor, y: Optional[torch.Tensor], draws) -> torch.Tensor:
        if y is None:
            raise ValueError("data: distillation needs labelled data (x0, y)")
        t, eps = draws.uniform().to(x0.dtype), draws.normal(x0)
        gamma = low + (high - low) * draws.uniform().to(x0.dtype)  # gamma ~ U[low, high]
        return distillation_loss(net, teacher, x0, eps, t, y, gamma)

    flags = [p.requires_grad for p in teacher.parameters()]
    try:
        for p in teacher.parameters():
            p.requires_grad_(False)  # frozen: only the student learns
        return fit(student, data, loss, settings, resume=resume, desc="distilling guidance")
    finally:
        for p, flag in zip(teacher.parameters(), flags):
            p.requires_grad_(flag)


def velocity_gap_to_score(
    v_fn: VelocityFn, mixture, y, x: torch.Tensor, times: Sequence[float]
) -> float:
    """The largest gap between ``v_fn`` and the velocity of a mixture's score taken by autograd,
    over the points ``x`` and the ``times``: at each t, the score grad log p_t(x | y) of the law of
    x_t (``mixture.flow_marginal(t)``, its log-density by Cholesky) turned into a velocity by
    :func:`score_to_velocity`, -(x_t + t score) / (1 - t). Nothing is shared with the closed-form
    velocity (``exact_velocity_fn``), so a small gap checks it independently (times < 1)."""
    check_callable(v_fn, "v_fn"), check_mixture(mixture)
    # no point: nothing to compare; a NaN one: max(0.0, nan) is 0.0, a gap of 0 that passes any bound
    check_finite(check_tensor(x, "x", floating=True, ndim=2, nonempty=True), "x")
    worst = 0.0  # no time: nothing checked, so refused (a gap of 0 would pass any bound)
    for t in check_reals(times, "times", low=0, high=1, high_open=True):
        probe = x.detach().clone().requires_grad_(True)
        (score,) = torch.autograd.grad(mixture.flow_marginal(t).log_prob(probe, y).sum(), probe)
        tt = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        with torch.no_grad():
            gap = v_fn(x, tt) - score_to_velocity(score, x, tt)
        worst = max(worst, gap.abs().max().item())
    return worst


def velocity_gap_to_eps(
    v_fn: VelocityFn, eps_fn: Callable, schedule, x: torch.Tensor, steps: Sequence[int]
) -> float:
    """The largest gap between ``v_fn`` on the straight path and ``eps_fn`` on a diffusion chain,
    over the points ``x`` and the chain's 0-based ``steps``: at each step, the matched time and
    scale t, c = :func:`matched_time` of alpha_bar (x on the path is x / c on the chain) and the
    noise prediction there turned into a velocity by :func:`eps_to_velocity`. Small where the two
    are the same rule in two parametrisations (eq. 170 on exact velocities and on exact noise)."""
    check_callable(v_fn, "v_fn"), check_schedule(schedule)
    check_callable(eps_fn, "eps_fn")
    check_finite(check_tensor(x, "x", floating=True, ndim=2, nonempty=True), "x")  # as above
    n, worst = x.shape[0], 0.0
    for step in check_levels(schedule, steps):  # at least one step: an empty list checks nothing
        t, c = matched_time(schedule.alpha_bar[step])
        tt = torch.full((n,), t.item(), dtype=x.dtype, device=x.device)
        eps = eps_fn(x / c, torch.full((n,), step, device=x.device))
        worst = max(worst, (v_fn(x, tt) - eps_to_velocity(eps, x, tt)).abs().max().item())
    return worst
