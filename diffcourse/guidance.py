"""Guidance rules: how a conditional score is assembled from simpler pieces.

Both rules act on tensors of one shape (scores, or noise predictions for eq. 170) and know
nothing about networks or samplers. gamma is the paper's guidance scale; other names for it:
Dhariwal & Nichol's classifier scale = gamma, diffusers' ``guidance_scale`` = gamma,
Ho & Salimans' w = gamma - 1.

Every guidance rule also comes as an ``eps_fn`` builder: it takes the models (or exact
predictors), gamma and the rest, and returns ``eps_fn(x_t, t)`` for any sampler.

The variants of chapter 8 and how each meets eq. 170, eps = gamma eps_c + (1 - gamma) eps_u:
- :func:`per_level_cfg_eps_fn`: eq. 170 with a scale gamma_t per level; a constant is eq. 170.
- :func:`interval_cfg_eps_fn`: eq. 170 on an interval of t, eps_c elsewhere; all of 0..T-1 is eq. 170.
- :func:`rescaled_cfg` (:func:`rescaled_cfg_eps_fn`): eq. 170, then each sample rescaled to eps_c's
  spread; phi = 0 is eq. 170. :func:`rescaled_cfg_v_eps_fn` does the same to v-predictions, as Lin
  et al. do.
- :func:`autoguidance_eps_fn`: eq. 170 with a weaker conditional model for eps_u; with the
  unconditional model as the weak one it is eq. 170.
- :func:`apg_eps_fn`: eq. 170 in x0 space, its update clipped in norm, its part along D_c scaled by
  eta, with momentum; eta = 1, r = inf, beta = 0 is eq. 170.
- :func:`dynamic_threshold_eps_fn`: clips x0_hat of any eps_fn (usually eq. 170's); where no x0_hat
  exceeds 1 in magnitude it changes nothing.
- :func:`cfgpp_eps_fn`: eq. 170 with lam for gamma in x0_hat only, eps_u for DDIM's direction; not
  eq. 170 at any lam > 0, and lam = 0 is unconditional DDIM. Its DDIM run is eq. 170 with the
  per-level scale :func:`cfgpp_gamma_eff`; :func:`lam_matching` picks lam for a given gamma.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import torch

from .checks import (
    check_bool,
    check_built_for,
    check_callable,
    check_finite,
    check_generator,
    check_int,
    check_labels,
    check_module,
    check_real,
    check_same,
    check_schedule,
    check_tensor,
    current_run,
    known_step,
    read_values,
)
from .device import full_precision
from .schedules import Schedule, StepTable, _gather, ddim_levels  # noqa: F401 (_gather: old import path)
from .targets import eps_to_v, eps_to_x0, v_to_eps, x0_to_eps

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PairFn = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def _check_gamma(gamma) -> float:
    """The guidance scale: a finite real number >= 0."""
    return check_real(gamma, "gamma", low=0)


# the names of the checks this module had before diffcourse.checks, for code written against them
_check_real, _check_pair = check_real, check_same


def _check_fns(**fns) -> None:
    for name, fn in fns.items():
        check_callable(fn, name)


def classifier_guidance(
    score_uncond: torch.Tensor, classifier_grad: torch.Tensor, gamma: float
) -> torch.Tensor:
    """grad log p(x_t) + gamma grad log p(y|x_t)  (Luo eq. 166).

    gamma = 0 ignores y, gamma = 1 gives the conditional score (eq. 165), gamma > 1 sharpens.
    """
    gamma = _check_gamma(gamma)
    check_same(score_uncond, classifier_grad, "score_uncond", "classifier_grad")
    return score_uncond + gamma * classifier_grad


def classifier_free_guidance(
    cond: torch.Tensor, uncond: torch.Tensor, gamma: float
) -> torch.Tensor:
    """gamma cond + (1 - gamma) uncond  (Luo eq. 170).

    ``cond``/``uncond`` are both scores or both noise predictions: the rule is linear, and
    score = -eps / sqrt(1 - alpha_bar) scales both alike, so one form gives the other.
    """
    gamma = _check_gamma(gamma)
    check_same(cond, uncond, "cond", "uncond")
    return gamma * cond + (1 - gamma) * uncond


# ---- wrappers: guidance turns models into a new eps_fn(x_t, t) for any sampler ----------------------


def classifier_grad_fn(classifier: torch.nn.Module, y: torch.Tensor) -> Fn:
    """grad_{x_t} log p_phi(y | x_t, t) of a noise-aware classifier, by autograd, as ``grad_fn(x_t, t)``.

    ``classifier.log_prob(x_t, t, y)`` gives log p_phi(y | x_t, t); gradients are taken even inside a
    sampler's ``torch.no_grad()``, and only with respect to x_t."""

    check_module(classifier, "classifier")
    if not callable(getattr(classifier, "log_prob", None)):
        raise TypeError(
            "classifier must have a log_prob(x_t, t, y) method (a noise-aware classifier)"
        )

    def grad_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(classifier.log_prob(x, t, y).sum(), x)
        return g

    return grad_fn


def classifier_guided_eps_fn(eps_fn: Fn, grad_fn: Fn, schedule: Schedule, gamma: float) -> Fn:
    """Classifier guidance (Luo eq. 166) in noise form, as a sampler's ``eps_fn``.

    With score = -eps / sqrt(1 - alpha_bar), eq. 166 reads
    eps_guided = eps_uncond - gamma sqrt(1 - alpha_bar_t) grad log p(y | x_t):
    :func:`classifier_guidance` applied to the noise prediction and the classifier term scaled into
    noise units. ``eps_fn`` is the unconditional predictor and ``grad_fn`` the classifier gradient,
    learned (:func:`classifier_grad_fn`) or exact (``mixture.exact_classifier_grad_fn``).
    """
    gamma = _check_gamma(gamma)
    _check_fns(eps_fn=eps_fn, grad_fn=grad_fn)
    sigma = StepTable(
        (1 - check_schedule(schedule).alpha_bar).sqrt(),
        "the schedule classifier_guided_eps_fn was built with",
    )

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x_t, t)
        if gamma == 0:  # gamma = 0 ignores y: skip the classifier's cost
            return eps
        return classifier_guidance(eps, -sigma.at(t, x_t) * grad_fn(x_t, t).to(eps.dtype), gamma)

    return guided


def skip_first_step(grad_fn: Fn, schedule: Schedule) -> Fn:
    """``grad_fn`` with 0 at the sampler's first level, t = T (0-based T - 1), and unchanged elsewhere
    (chapter 4, "The first step of sampling").

    There alpha_bar_T is nearly 0: x_T says almost nothing about y and the exact gradient is nearly
    0. But the DDPM step moves its mean by gamma beta_T / sqrt(alpha_T) times the gradient (253 at
    gamma = 8 for ``cosine_schedule(200)``, whose beta_T is clipped at 0.999), so a learned
    classifier's small error there throws the samples far out."""
    _check_fns(grad_fn=grad_fn)
    T = check_schedule(schedule).T
    keep = torch.ones(T)
    keep[-1] = 0.0
    keep = StepTable(keep, "the schedule skip_first_step was built with")

    def grad(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        g = grad_fn(x_t, t)
        return g * keep.at(t, g)

    return grad


def classifier_free_eps_fn(cond_fn: Fn, uncond_fn: Fn, gamma: float) -> Fn:
    """Classifier-free guidance (Luo eq. 170) from two noise predictors, as a sampler's ``eps_fn``:
    gamma eps(x_t, t, y) + (1 - gamma) eps(x_t, t, null). Two calls per step; for exact scores,
    or any pair of predictors. A network that takes the null label does better with
    :func:`batched_cfg_eps_fn`: one forward pass."""
    gamma = _check_gamma(gamma)
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
    if gamma in (0.0, 1.0):  # one branch has weight 0: skip it, the result is the other
        return uncond_fn if gamma == 0 else cond_fn
    return lambda x_t, t: classifier_free_guidance(cond_fn(x_t, t), uncond_fn(x_t, t), gamma)


def batched_cfg_eps_fn(model: torch.nn.Module, y: torch.Tensor, gamma: float) -> Fn:
    """Classifier-free guidance (Luo eq. 170) with **one** forward pass per step: the batch is stacked
    with itself, the first copy labelled y and the second the null label, then split and combined
    by :func:`classifier_free_guidance`. Same numbers as two passes (up to float rounding, which may
    differ with the batch size), one kernel launch per layer. At gamma = 1 only the conditional pass
    runs and at gamma = 0 only the null one, so gamma = 1 *is* the conditional sampler, bit for bit.

    ``model(x_t, t, y)`` is a conditional noise predictor whose null label is ``model.null_label``
    (trained with condition dropout, ``p_uncond > 0``)."""
    gamma = _check_gamma(gamma)
    check_module(model)
    null_label = getattr(model, "null_label", None)
    if not getattr(model, "num_classes", 0) or null_label is None:
        raise ValueError("model must be conditional, with a null label (num_classes > 0)")
    n = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim == 1 else -1
    # guidance asks for a real class: the null label is refused
    y = check_labels(y, n, model.num_classes, next(model.parameters()).device)
    labels = torch.cat([y, torch.full_like(y, null_label)])

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] != y.shape[0]:
            raise ValueError(f"x_t has {x_t.shape[0]} rows but y has {y.shape[0]}")
        if gamma in (0.0, 1.0):
            return model(x_t, t, y if gamma == 1 else labels[y.shape[0] :])
        cond, uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]), labels).chunk(2)
        return classifier_free_guidance(cond, uncond, gamma)

    return guided


# ---- variants of eq. 170 (chapter 8) -------------------------------------------------------------------


def rescaled_cfg(
    cond: torch.Tensor, uncond: torch.Tensor, gamma: float, phi: float = 0.7
) -> torch.Tensor:
    """Rescaled classifier-free guidance (Lin et al. 2024, WACV; arXiv 2023, Algorithm 2): eq. 170, then each sample's
    guided prediction is rescaled to the standard deviation of its conditional prediction, and the
    two are mixed, ``phi`` rescaled + (1 - phi) plain. phi = 0 is eq. 170; gamma = 1 is ``cond`` for
    every phi. Lin et al. apply it to v-predictions (:func:`rescaled_cfg_v_eps_fn`); diffusers applies
    it to the network's output, the noise prediction of a noise predictor (:func:`rescaled_cfg_eps_fn`)."""
    phi = check_real(phi, "phi", low=0, high=1)
    guided = classifier_free_guidance(cond, uncond, gamma)
    if phi == 0:  # eq. 170 itself: no spread to compute
        return guided
    dims = tuple(range(1, cond.ndim))
    # a sample of one number has no spread: nothing to rescale (its unbiased std would be NaN)
    correction = 1 if cond[:1].numel() > 1 else 0
    c_std = cond.std(dim=dims, keepdim=True, correction=correction)
    g_std = guided.std(dim=dims, keepdim=True, correction=correction)
    scale = torch.where(g_std > 0, c_std / g_std.clamp(min=1e-12), torch.ones_like(g_std))
    return phi * guided * scale + (1 - phi) * guided


def rescaled_cfg_eps_fn(cond_fn: Fn, uncond_fn: Fn, gamma: float, phi: float = 0.7) -> Fn:
    """:func:`rescaled_cfg` as a sampler's ``eps_fn``: at each call, eq. 170 of the two predictions,
    rescaled per sample to the conditional prediction's spread and mixed with weight ``phi``
    (Lin et al. 2024's rule in diffusers' form, on the noise predictions; on v-predictions, as Lin
    et al. apply it, see :func:`rescaled_cfg_v_eps_fn`). phi = 0 is :func:`classifier_free_eps_fn`,
    bit for bit."""
    gamma, phi = _check_gamma(gamma), check_real(phi, "phi", low=0, high=1)
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
    return lambda x_t, t: rescaled_cfg(cond_fn(x_t, t), uncond_fn(x_t, t), gamma, phi)


def rescaled_cfg_v_eps_fn(
    cond_fn: Fn, uncond_fn: Fn, schedule: Schedule, gamma: float, phi: float = 0.7
) -> Fn:
    """:func:`rescaled_cfg` on v-predictions, the target Lin et al. (2024) rescale, as a sampler's
    ``eps_fn``: at each call both noise predictions become v = (eps - sqrt(1 - alpha_bar_t) x_t) /
    sqrt(alpha_bar_t) (:func:`~diffcourse.targets.eps_to_v`), eq. 170 is taken there and rescaled
    per sample to v_c's spread, mixed with weight ``phi``, and turned back into noise. Eq. 170 is the
    same in either target (v is affine in eps); the rescaling is not: at high noise v is close to
    -x0_hat, so it acts on the clean estimates that guidance spreads, where the noise predictions'
    spreads barely differ. phi = 0 is :func:`classifier_free_eps_fn` up to rounding."""
    gamma, phi = _check_gamma(gamma), check_real(phi, "phi", low=0, high=1)
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
    schedule = check_schedule(schedule)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = schedule.gather("alpha_bar", t, x_t)
        v_c, v_u = (eps_to_v(x_t, f(x_t, t), a) for f in (cond_fn, uncond_fn))
        return v_to_eps(x_t, rescaled_cfg(v_c, v_u, gamma, phi), a)

    return guided


GammaAt = Union[Callable[[int], float], Mapping[int, float], Sequence[float]]


def _steps_on_host(t: torch.Tensor) -> List[int]:
    """The distinct steps in t as Python ints: the sampler's own number when it passed this very t
    (no read of the device), else read from t."""
    step = known_step(t)
    if step is not None:
        return [step]
    check_tensor(t, "t", floating=False)
    return read_values(torch.unique(t))


def per_level_cfg_eps_fn(cond_fn: Fn, uncond_fn: Fn, gamma_at: GammaAt) -> Fn:
    """Classifier-free guidance (Luo eq. 170) with a scale that depends on the noise level:
    gamma_t eps(x_t, t, y) + (1 - gamma_t) eps(x_t, t, null), gamma_t = ``gamma_at[t]`` (a sequence
    of length T or a mapping over the 0-based steps visited) or ``gamma_at(t)`` (a function of the
    step). Where gamma_t = 1 the unconditional pass is skipped: that level costs one evaluation.

    Guidance on an interval (:func:`interval_cfg_eps_fn`) is the special case gamma_t = gamma inside
    the interval and 1 outside; a constant gamma_t = gamma is :func:`classifier_free_eps_fn`; and the
    per-level scale that makes CFG's DDIM step equal CFG++'s is :func:`cfgpp_gamma_eff`."""
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
    if callable(gamma_at):
        lookup = gamma_at
    elif isinstance(gamma_at, (Mapping, Sequence)) and not isinstance(gamma_at, (str, bytes)):
        lookup = gamma_at.__getitem__
    else:
        raise TypeError(
            f"gamma_at must be a function of the step, a mapping or a sequence, got {type(gamma_at).__name__}"
        )

    def gamma_of(step: int) -> float:
        try:
            value = lookup(step)
        except (KeyError, IndexError):
            raise ValueError(f"gamma_at has no scale for step {step}") from None
        return check_real(value, f"gamma_at[{step}]", low=0)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = cond_fn(x_t, t)
        gammas = {step: gamma_of(step) for step in _steps_on_host(t)}
        if all(g == 1 for g in gammas.values()):
            return cond  # no unconditional pass where gamma_t = 1
        uncond = uncond_fn(x_t, t)
        if len(gammas) == 1:  # a sampler's call: one level for the batch
            return classifier_free_guidance(cond, uncond, next(iter(gammas.values())))
        out = cond.clone()
        for step, g in gammas.items():
            if g != 1:
                rows = t == step
                out[rows] = classifier_free_guidance(cond[rows], uncond[rows], g)
        return out

    return guided


def ramped_gamma(gamma: float, T: int, rising: bool = True) -> Callable[[int], float]:
    """A scale that changes linearly over the chain's 0-based steps s = 0..T-1, for
    :func:`per_level_cfg_eps_fn`. With ``rising`` (the default), gamma_s = 1 + 2 (gamma - 1)
    (1 - s / (T - 1)): 1 at the noisiest step T - 1 and 2 gamma - 1 at step 0, so the scale rises
    as sampling goes from noise to data. ``rising=False`` mirrors it: gamma_s = 1 + 2 (gamma - 1)
    s / (T - 1). Either way gamma_s - 1 averages gamma - 1 over the T steps: the ramp spends the
    guidance of a constant gamma, placed differently. Wang et al. (2024) report that monotonically
    increasing schedules improve on a constant scale. gamma = 1 gives 1 everywhere; a gamma below 1
    is refused: its ramp would run the other way (below 1/2, to negative scales at one end)."""
    gamma = check_real(gamma, "gamma", low=1)
    T = check_int(T, "T", low=2)
    rising = check_bool(rising, "rising")

    def gamma_at(step: int) -> float:
        step = check_int(step, "step", low=0, high=T - 1)
        share = 1 - step / (T - 1) if rising else step / (T - 1)
        return 1 + 2 * (gamma - 1) * share

    return gamma_at


def interval_cfg_eps_fn(cond_fn: Fn, uncond_fn: Fn, gamma: float, t_low: int, t_high: int) -> Fn:
    """Guidance limited to an interval of noise levels (Kynkäänniemi et al. 2024): eq. 170 at the
    0-based steps t_low <= t <= t_high, the plain conditional prediction (gamma = 1) elsewhere. Their
    finding: guidance at high noise costs diversity and at low noise does little, so the middle is
    where it pays. t_low = 0, t_high = T - 1 is :func:`classifier_free_eps_fn`. The steps are those
    of the chain the sampler runs: an interval past its last step guides nowhere (the conditional
    sampler). A special case of :func:`per_level_cfg_eps_fn`."""
    gamma = _check_gamma(gamma)
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
    t_low, t_high = check_int(t_low, "t_low", low=0), check_int(t_high, "t_high", low=0)
    if t_high < t_low:
        raise ValueError(f"t_low must not exceed t_high, got t_low={t_low}, t_high={t_high}")
    return per_level_cfg_eps_fn(
        cond_fn, uncond_fn, lambda step: gamma if t_low <= step <= t_high else 1.0
    )


def cfgpp_gamma_eff(schedule: Schedule, steps: int, lam: float) -> Dict[int, float]:
    """The scale gamma_t at each level of a DDIM run (eta = 0, ``steps`` levels, see
    :func:`~diffcourse.schedules.ddim_levels`) that makes CFG's step equal CFG++'s at ``lam``:
    ``{level: gamma_t}``, to give :func:`per_level_cfg_eps_fn`.

    Write sigma = sqrt(1 - alpha_bar), r = sqrt(alpha_bar_s / alpha_bar_t) for a step from level t to
    s, and Delta = eps_c - eps_u. DDIM's step from x0_hat = (x_t - sigma_t eps) / sqrt(alpha_bar_t) is
    x_s = sqrt(alpha_bar_s) x0_hat + sigma_s eps' (eps' the direction's noise). CFG puts
    eps = eps' = eps_u + gamma Delta: x_s = r x_t - k eps_u - k gamma Delta, with k = r sigma_t - sigma_s.
    CFG++ puts eps = eps_u + lam Delta and eps' = eps_u: x_s = r x_t - k eps_u - r sigma_t lam Delta.
    The two agree when k gamma = r sigma_t lam = (k + sigma_s) lam, that is
    gamma_t = lam (1 + sigma_s / k). k > 0 whenever alpha_bar_s > alpha_bar_t; on the last step
    (to the clean data, sigma_s = 0) gamma_t = lam."""
    check_schedule(schedule)
    lam = check_real(lam, "lam", low=0)
    levels, alpha_bar = ddim_levels(schedule.T, steps), schedule.alpha_bar.double()
    out = {}
    for i, t in enumerate(levels):
        a_t, a_s = (
            alpha_bar[t].item(),
            alpha_bar[levels[i + 1]].item() if i + 1 < len(levels) else 1.0,
        )
        k = (a_s / a_t) ** 0.5 * (1 - a_t) ** 0.5 - (1 - a_s) ** 0.5
        out[t] = lam * (1 + (1 - a_s) ** 0.5 / k)
    return out


def lam_matching(schedule: Schedule, steps: int, gamma: float) -> float:
    """CFG++'s lam whose DDIM step at the middle level of the run (``ddim_levels(T, steps)[steps // 2]``)
    equals CFG's step at ``gamma``: gamma / gamma_t(lam = 1) there, gamma_t being linear in lam
    (:func:`cfgpp_gamma_eff`). The two then differ only in how the scale is spread over the levels."""
    gamma = _check_gamma(gamma)
    levels = ddim_levels(check_schedule(schedule).T, steps)
    return gamma / cfgpp_gamma_eff(schedule, steps, 1.0)[levels[len(levels) // 2]]


def autoguidance_eps_fn(good_fn: Fn, weak_fn: Fn, gamma: float) -> Fn:
    """Autoguidance (Karras et al. 2024): eq. 170 with a *weaker conditional* model (smaller, or
    trained for less long, on the same task) in place of the unconditional one,
    gamma eps_good(x_t, t, y) + (1 - gamma) eps_weak(x_t, t, y). It extrapolates away from the weak
    model's errors rather than away from other classes, so it sharpens quality with less loss of
    variety. Both callables take the same label; the arithmetic is :func:`classifier_free_eps_fn`'s."""
    _check_fns(good_fn=good_fn, weak_fn=weak_fn)
    return classifier_free_eps_fn(good_fn, weak_fn, gamma)


def cfgpp_eps_fn(cond_fn: Fn, uncond_fn: Fn, lam: float) -> PairFn:
    """CFG++ (Chung et al., ICLR 2025, arXiv:2406.08070) for :func:`~diffcourse.samplers.ddim_sample`:
    the pair ``(eps_u + lam (eps_c - eps_u), eps_u)``. DDIM takes x0_hat from the first and renoises
    along the second, the *unconditional* noise, where CFG renoises along the guided one too.

    Against eq. 170: lam plays gamma's part in x0_hat only. lam = 0 is unconditional DDIM; at every
    lam > 0, lam = 1 included, it differs from CFG at gamma = lam by the direction term. Chung et al.
    keep lam in [0, 1], which does the work of CFG's gamma in about [1, 12.5], so other values are
    refused. It needs a sampler that takes pairs: DDPM and predictor-corrector refuse it.
    """
    lam = check_real(lam, "lam", low=0, high=1)  # Chung et al.'s range
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        uncond = uncond_fn(x_t, t)
        if lam == 0:  # unconditional DDIM: skip the conditional pass
            return uncond, uncond
        return classifier_free_guidance(cond_fn(x_t, t), uncond, lam), uncond

    return guided


class APGEpsFn:
    """The callable :func:`apg_eps_fn` returns. It carries the momentum of the guidance update from
    one call to the next within a sampling run, and drops it by itself when a new run starts (each
    sampler run is a new :class:`~diffcourse.checks.SamplingRun`), so two runs in a row give the
    same samples. Called outside a sampler, the momentum runs on from call to call until
    :meth:`reset`."""

    def __init__(
        self,
        cond_fn: Fn,
        uncond_fn: Fn,
        schedule: Schedule,
        gamma: float,
        eta: float,
        r: float,
        beta: float,
    ):
        _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
        self.cond_fn, self.uncond_fn, self.schedule = cond_fn, uncond_fn, check_schedule(schedule)
        self.gamma, self.eta, self.beta = (
            _check_gamma(gamma),
            check_real(eta, "eta"),
            check_real(beta, "beta"),
        )
        self.r = check_real(r, "r", low=0, low_open=True, finite=False)  # math.inf: no clipping
        self.average: Optional[torch.Tensor] = None  # the running update, Delta_m of the last call
        self._run = None  # the sampling run that momentum belongs to

    def reset(self) -> None:
        """Forget the momentum: the next call starts a new run."""
        self.average = None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        run = current_run()
        if run is not self._run:  # a new sampling run (or the first call after one)
            self.average, self._run = None, run
        cond = self.cond_fn(x_t, t)
        if self.gamma == 1:  # the update is multiplied by gamma - 1 = 0: skip its pass
            return cond
        a = self.schedule.gather("alpha_bar", t, x_t)
        d_cond, d_uncond = eps_to_x0(x_t, cond, a), eps_to_x0(x_t, self.uncond_fn(x_t, t), a)
        delta = d_cond - d_uncond
        if self.beta != 0:  # momentum: Delta_m = Delta + beta Delta_m(previous call)
            if self.average is not None and self.average.shape != delta.shape:
                raise ValueError(
                    f"x_t of shape {tuple(x_t.shape)} after calls of shape "
                    f"{tuple(self.average.shape)}: call reset() between runs outside a sampler"
                )
            delta = delta if self.average is None else delta + self.beta * self.average
            self.average = delta
        view = (-1,) + (1,) * (x_t.ndim - 1)  # per-sample norms over all non-batch dims
        if math.isfinite(self.r):  # clip each sample's update to the ball of radius r
            delta = delta * (self.r / delta.flatten(1).norm(dim=1)).clamp(max=1).view(view)
        unit = torch.nn.functional.normalize(d_cond.flatten(1), dim=1).view_as(d_cond)
        parallel = (delta * unit).flatten(1).sum(dim=1).view(view) * unit
        guided = d_cond + (self.gamma - 1) * (delta - parallel + self.eta * parallel)
        return x0_to_eps(x_t, guided, a)


def apg_eps_fn(
    cond_fn: Fn,
    uncond_fn: Fn,
    schedule: Schedule,
    gamma: float,
    eta: float = 0.0,
    r: float = math.inf,
    beta: float = 0.0,
) -> APGEpsFn:
    """Adaptive projected guidance (Sadat, Hilliges & Weber, ICLR 2025, arXiv:2410.02416), as an
    ``eps_fn``. It works on the denoised predictions D_c, D_u (x0_hat from each noise prediction):

    1. Delta = D_c - D_u, the CFG update; with momentum beta (they take beta < 0, pushing away from
       the previous updates) Delta is replaced by Delta + beta Delta_prev, Delta_prev being the
       replaced update of the previous call;
    2. each sample's Delta is scaled by min(1, r / ||Delta||), its norm over all non-batch dims;
    3. Delta splits into Delta_par, its projection on D_c (per sample), and Delta_perp = Delta - Delta_par;
    4. D = D_c + (gamma - 1)(Delta_perp + eta Delta_par), turned back into noise.

    The parallel part is what oversaturates (their finding), so eta < 1 damps it. eta = 1, r = inf, beta = 0 is
    eq. 170 in x0 space, hence in noise space (the conversion is affine and the weights sum to one);
    gamma = 1 is ``cond_fn``. The result holds momentum within a run and starts afresh with each
    sampler run: see :class:`APGEpsFn`. Momentum counts calls, so it is meant for one call per level
    (DDPM, DDIM), not a corrector's extra calls.
    """
    return APGEpsFn(cond_fn, uncond_fn, schedule, gamma, eta, r, beta)


def dynamic_threshold_eps_fn(eps_fn: Fn, schedule: Schedule, percentile: float = 0.995) -> Fn:
    """Dynamic thresholding (Saharia et al., NeurIPS 2022, arXiv:2205.11487, Sec. 2.3) around any
    ``eps_fn``, typically a guided one: per sample, s = max(the ``percentile`` quantile of
    |x0_hat|, 1); x0_hat is clipped to [-s, s] and divided by s, then turned back into noise.

    Large gamma pushes x0_hat out of the data's range [-1, 1] and saturates the samples; this pulls
    the outliers in without flattening the rest. Where the quantile is within 1, s = 1 and the rule
    is Imagen's static thresholding, a clip to [-1, 1]; a sample with every entry of x0_hat inside
    [-1, 1] keeps its prediction bit for bit. With DDPM it is Imagen's sampler; DDIM then uses the
    thresholded noise for its direction too.
    """
    p = check_real(percentile, "percentile", low=0, high=1, low_open=True)
    check_callable(eps_fn, "eps_fn")
    check_schedule(schedule)

    def thresholded(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x_t, t)
        if not eps.numel():  # no sample: nothing to threshold (torch's quantile fails on none)
            return eps
        a = schedule.gather("alpha_bar", t, x_t)
        x0 = eps_to_x0(x_t, eps, a)
        s = (
            torch.quantile(x0.abs().flatten(1), p, dim=1)
            .clamp(min=1)
            .view(-1, *[1] * (x_t.ndim - 1))
        )
        clipped = torch.maximum(torch.minimum(x0, s), -s) / s
        # a sample with every |x0_hat| <= 1 (so s = 1) is not changed: its eps, without a round trip
        touched = (x0.abs() > 1).flatten(1).any(1).view_as(s)
        return torch.where(touched, x0_to_eps(x_t, clipped, a), eps)

    return thresholded


# ---- the implicit classifier of classifier-free guidance (chapter 5) ---------------------------------


def implicit_classifier_grad_fn(cond_fn: Fn, uncond_fn: Fn, schedule: Schedule) -> Fn:
    """The classifier gradient a classifier-free model holds without any classifier (Luo eq. 167,
    grad log p(y|x_t) = grad log p(x_t|y) - grad log p(x_t)), in noise form, as ``grad_fn(x_t, t)``:

        grad log p_t(y | x_t) = (eps(x_t, t, null) - eps(x_t, t, y)) / sqrt(1 - alpha_bar_t).

    ``cond_fn``/``uncond_fn`` are the two noise predictors (a network's two branches, or the exact
    ones of a mixture). It plugs into :func:`classifier_guided_eps_fn` like a learned classifier's
    gradient, and classifier guidance driven by it is classifier-free guidance (eqs. 168-170): the
    sigma_t here cancels the one there.
    """
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn)
    sigma = StepTable(
        (1 - check_schedule(schedule).alpha_bar).sqrt(),
        "the schedule implicit_classifier_grad_fn was built with",
    )

    def grad_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (uncond_fn(x_t, t) - cond_fn(x_t, t)) / sigma.at(t, x_t)

    return grad_fn


# ---- conditions beyond one label (chapter 10) ------------------------------------------------------------


def _check_terms(terms) -> list:
    """``terms`` as a list of (callable, finite float) pairs, or a TypeError/ValueError naming the term."""
    if isinstance(terms, (str, bytes)) or not hasattr(terms, "__iter__"):
        raise TypeError(
            f"terms must be a list of (cond_fn, weight) pairs, got {type(terms).__name__}"
        )
    out = []
    for i, term in enumerate(terms):
        if not isinstance(term, (tuple, list)) or len(term) != 2:
            raise TypeError(f"terms[{i}] must be a (cond_fn, weight) pair, got {term!r}")
        fn = check_callable(term[0], f"terms[{i}]: cond_fn")
        out.append((fn, check_real(term[1], f"terms[{i}] weight")))
    if not out:
        raise ValueError("terms must hold at least one (cond_fn, weight) pair")
    return out


def composed_eps_fn(uncond_fn: Fn, terms: Sequence[Tuple[Fn, float]]) -> Fn:
    """Composed conditions (Liu et al. 2022, "Composable Diffusion"), as a sampler's ``eps_fn``:

        eps_u + sum_i w_i (eps_i - eps_u),

    ``uncond_fn`` giving eps_u and ``terms`` a list of ``(cond_fn, weight)``. Each difference
    eps_i - eps_u is a classifier gradient in noise units (eq. 167), so the sum is classifier guidance
    (eq. 166) with one classifier per condition: a positive weight asks for condition i (AND), a
    negative one steers away from it (NOT). One term ``(cond_fn, gamma)`` is eq. 170; with
    ``uncond_fn`` a *negative* condition it is a negative prompt (:func:`negative_prompt_eps_fn`).
    In score form it is the score of p_t(x) prod_i (p_t(x|c_i) / p_t(x))^{w_i}, normalised.
    A term of weight 0 is skipped (no call), as is eps_u when the weights sum to exactly 1.
    """
    check_callable(uncond_fn, "uncond_fn")
    terms = [(fn, w) for fn, w in _check_terms(terms) if w != 0]
    base = 1 - sum(w for _, w in terms)  # the weight eps_u keeps: 1 - sum_i w_i

    def composed(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not terms:
            return uncond_fn(x_t, t)
        parts = [w * fn(x_t, t) for fn, w in terms]
        out = parts[0]
        for p in parts[1:]:
            out = out + p
        return out if base == 0 else out + base * uncond_fn(x_t, t)

    return composed


def negative_prompt_eps_fn(cond_fn: Fn, negative_fn: Fn, gamma: float) -> Fn:
    """A negative prompt: eq. 170 with the null branch replaced by a negative condition y-,
    gamma eps(x_t, t, y+) + (1 - gamma) eps(x_t, t, y-), as a sampler's ``eps_fn``. In score form it is
    the score of p_t(x|y+)^gamma p_t(x|y-)^(1 - gamma), normalised; gamma = 1 is ``cond_fn`` (the
    negative prompt is never called), and with ``negative_fn`` the null condition it is eq. 170.
    It is :func:`composed_eps_fn` with eps_u = eps(y-) and one term (eps(y+), gamma)."""
    gamma = _check_gamma(gamma)
    check_callable(cond_fn, "cond_fn")
    check_callable(negative_fn, "negative_fn")
    return composed_eps_fn(negative_fn, [(cond_fn, gamma)])


# ---- chapter 12: independent condition guidance and feedback guidance -------------------------------------

LabelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def independent_condition_eps_fn(
    model: LabelFn,
    y: torch.Tensor,
    gamma: float,
    num_classes: int,
    generator: Optional[torch.Generator] = None,
) -> Fn:
    """Independent condition guidance (ICG; Sadat, Kansy, Hilliges & Weber, ICLR 2025,
    arXiv:2407.02687): eq. 170 with the null-label prediction replaced by the prediction at a label
    drawn independently of the sample, gamma eps(x_t, t, y) + (1 - gamma) eps(x_t, t, y_rand).

    ``model(x_t, t, labels)`` is a conditional noise predictor (a network, or the exact mixture's
    ``exact_eps_fn`` per label); it needs no null label and no condition dropout, which is the
    point. ``y_rand`` is drawn once per sample, uniformly over the ``num_classes`` classes, from
    ``generator``, when this function is called; the returned callable carries it as ``.labels``.
    Where the prediction at y_rand equals the null one the rule *is* eq. 170; on rows where
    y_rand = y it is the conditional prediction for every gamma. Two evaluations per level.
    """
    check_callable(model, "model")
    gamma = _check_gamma(gamma)
    num_classes = check_int(num_classes, "num_classes", low=1)
    y = check_labels(check_tensor(y, "y", ndim=1), len(y), num_classes)
    device = generator.device if check_generator(generator) is not None else y.device
    y_rand = torch.randint(0, num_classes, y.shape, generator=generator, device=device).to(y.device)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = model(x_t, t, y)
        if gamma == 1:  # the random branch has weight 0: skip its pass
            return cond
        return classifier_free_guidance(cond, model(x_t, t, y_rand), gamma)

    guided.labels = y_rand
    return guided


def feedback_scale(log_ratio: torch.Tensor, pi: float, max_gamma: float = 10.0) -> torch.Tensor:
    """The state-dependent scale of feedback guidance (Koulischer et al. 2025, arXiv:2506.06085):
    gamma = R / (R - (1 - pi)), R = p_t(y|x_t) / p(y) = exp(``log_ratio``), per sample.

    It comes from their premise that the conditional law is an additive mixture,
    p(x|y) = pi q(x|y) + (1 - pi) p(x), of a sharper law q and the unconditional one: then
    q(x|y) is proportional to p(x) (R - (1 - pi)), whose score is
    grad log p + grad R / (R - (1 - pi)) = s_u + gamma (s_c - s_u), since grad R = R (s_c - s_u).
    Certain samples (R large) get gamma near 1; uncertain ones more. R is clamped below at
    (1 - pi) max_gamma / (max_gamma - 1), which caps gamma at ``max_gamma``; pi = 1 gives gamma = 1.
    """
    pi, max_gamma = _check_real(pi, "pi"), _check_real(max_gamma, "max_gamma")
    if not 0 < pi <= 1:
        raise ValueError(f"pi must lie in (0, 1], got {pi}")
    if not (math.isfinite(max_gamma) and max_gamma > 1):
        raise ValueError(f"max_gamma must be finite and > 1, got {max_gamma}")
    if not isinstance(log_ratio, torch.Tensor) or not log_ratio.is_floating_point():
        raise TypeError("log_ratio must be a floating-point tensor")
    if pi == 1:
        return torch.ones_like(log_ratio)
    floor = math.log((1 - pi) * max_gamma / (max_gamma - 1))
    # 1 - (1 - pi) / R = -expm1(log(1 - pi) - log R): accurate where R is close to 1 - pi
    return -1 / torch.expm1(math.log(1 - pi) - log_ratio.clamp(min=floor))


def feedback_eps_fn(
    cond_fn: Fn,
    uncond_fn: Fn,
    log_ratio_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pi: float,
    max_gamma: float = 10.0,
) -> Fn:
    """Feedback guidance (FBG; Koulischer, Handke, Deleu, Demeester & Ambrogioni 2025,
    arXiv:2506.06085) as an ``eps_fn``: eq. 170 with a scale per sample and per level,
    gamma(x_t, t) = :func:`feedback_scale` of ``log_ratio_fn(x_t, t)`` = log p_t(y|x_t) - log p(y).

    The paper estimates that ratio from the sampler's own steps (the feedback of its name); on a
    mixture it is exact (``mixture.exact_log_ratio_fn``). Where the ratio is the same for every
    sample and level the rule is eq. 170 at that one gamma. Two evaluations per level.
    """
    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn, log_ratio_fn=log_ratio_fn)
    feedback_scale(torch.zeros(1), pi, max_gamma)  # check pi and max_gamma once, not per step

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # one ratio per row: a mean over the batch would guide every row alike
        ratio = log_ratio_fn(x_t, t)
        check_tensor(ratio, "log_ratio_fn's output", shape=(x_t.shape[0],), device=x_t.device)
        gamma = feedback_scale(ratio.to(x_t.dtype), pi, max_gamma)
        gamma = gamma.reshape(-1, *[1] * (x_t.ndim - 1))
        cond, uncond = cond_fn(x_t, t), uncond_fn(x_t, t)
        check_same(cond, uncond, "cond", "uncond", dtype=False)
        return gamma * cond + (1 - gamma) * uncond  # eq. 170, one gamma per row

    return guided


# ---- the variants side by side (chapter 8's comparison) -----------------------------------------


class Variant(NamedTuple):
    """One row of chapter 8's comparison: a sampler's ``eps_fn`` and its network evaluations (NFE)
    per sample over a DDIM run."""

    eps_fn: Callable
    nfe: int


VARIANTS = (
    "conditional",
    "CFG",
    "interval",
    "rescaled",
    "rescaled, v",
    "autoguidance",
    "APG",
    "CFG++",
    "thresholding",
)


def variant_eps_fns(
    cond_fn: Fn,
    uncond_fn: Fn,
    schedule: Schedule,
    steps: int,
    gamma: float,
    *,
    weak_fn: Fn,
    cfg_fn: Optional[Fn] = None,
    beta: float = -0.5,
    phi: float = 0.7,
    percentile: float = 0.995,
    names: Optional[Sequence[str]] = None,
) -> Dict[str, Variant]:
    """Chapter 8's variants of eq. 170 at one scale ``gamma``, for a DDIM run on ``steps`` levels:
    ``{name: Variant(eps_fn, nfe)}`` for the ``names`` asked, in their order (default: all of
    :data:`VARIANTS`).

    - "conditional": ``cond_fn`` itself (gamma = 1), ``steps`` evaluations;
    - "CFG": eq. 170, ``cfg_fn`` if given (e.g. :func:`batched_cfg_eps_fn`'s one-pass form of the
      same rule), else :func:`classifier_free_eps_fn`;
    - "interval": :func:`interval_cfg_eps_fn` on the levels whose noise-to-signal ratio lies in
      [1/3, 3] (:func:`~diffcourse.schedules.nsr_interval`): one extra evaluation per level inside;
    - "rescaled": :func:`rescaled_cfg_eps_fn` with ``phi``, on the noise predictions (diffusers');
    - "rescaled, v": :func:`rescaled_cfg_v_eps_fn` with ``phi``, on v-predictions (Lin et al. 2024);
    - "autoguidance": :func:`autoguidance_eps_fn` with ``weak_fn`` (Karras et al. 2024);
    - "APG": :func:`apg_eps_fn` with eta = 0 and momentum ``beta`` (Sadat et al. 2025);
    - "CFG++": :func:`cfgpp_eps_fn` at the lam of :func:`lam_matching` (Chung et al. 2025);
    - "thresholding": :func:`dynamic_threshold_eps_fn` around "CFG" (Saharia et al. 2022).

    A guided row costs two evaluations per level (the interval: two inside it, one outside), less
    where its rule skips a branch of weight 0: CFG, the interval, autoguidance, APG and thresholding
    make one at gamma = 1, CFG and its kin also at gamma = 0, CFG++ at lam = 0. ``nfe`` counts the
    evaluations the rule makes, so a row at gamma = 1 reports what the conditional row does."""
    from .schedules import nsr_interval

    _check_fns(cond_fn=cond_fn, uncond_fn=uncond_fn, weak_fn=weak_fn)
    steps, gamma = check_int(steps, "steps", low=1), _check_gamma(gamma)
    names = VARIANTS if names is None else names
    if isinstance(names, str) or not names or not all(name in VARIANTS for name in names):
        raise ValueError(  # none asked: an empty table, in which a caller finds no row missing
            f"names must be a non-empty sequence of names from {VARIANTS}, got {names!r}"
        )
    cfg = classifier_free_eps_fn(cond_fn, uncond_fn, gamma) if cfg_fn is None else cfg_fn
    check_callable(cfg, "cfg_fn")
    lam = lam_matching(schedule, steps, gamma) if "CFG++" in names else None
    if lam is not None and lam > 1:  # the caller gave gamma, not lam: name what they gave
        raise ValueError(
            f"gamma = {gamma:g} on {steps} levels matches CFG++'s lam = {lam:.3g}, past its range"
            " [0, 1]: ask for a smaller gamma, or leave 'CFG++' out of names"
        )
    # evaluations per run: eq. 170's form skips its branch of weight 0 at gamma = 0 or 1
    cfg_nfe = steps if gamma in (0, 1) else 2 * steps
    apg_nfe = steps if gamma == 1 else 2 * steps

    def interval() -> Variant:  # built only when asked: its levels may not exist on a schedule
        lo, hi = nsr_interval(schedule)
        inside = 0 if gamma == 1 else sum(lo <= s <= hi for s in ddim_levels(schedule.T, steps))
        return Variant(interval_cfg_eps_fn(cond_fn, uncond_fn, gamma, lo, hi), steps + inside)

    build = {
        "conditional": lambda: Variant(cond_fn, steps),
        "CFG": lambda: Variant(cfg, cfg_nfe),
        "interval": interval,
        "rescaled": lambda: Variant(rescaled_cfg_eps_fn(cond_fn, uncond_fn, gamma, phi), 2 * steps),
        "rescaled, v": lambda: Variant(
            rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, schedule, gamma, phi), 2 * steps
        ),
        "autoguidance": lambda: Variant(autoguidance_eps_fn(cond_fn, weak_fn, gamma), cfg_nfe),
        "APG": lambda: Variant(apg_eps_fn(cond_fn, uncond_fn, schedule, gamma, beta=beta), apg_nfe),
        "CFG++": lambda: Variant(
            cfgpp_eps_fn(cond_fn, uncond_fn, lam), steps if lam == 0 else 2 * steps
        ),
        "thresholding": lambda: Variant(
            dynamic_threshold_eps_fn(cfg, schedule, percentile), cfg_nfe
        ),
    }
    return {name: build[name]() for name in names}


def model_variants(
    model: torch.nn.Module,
    weak: torch.nn.Module,
    y: torch.Tensor,
    schedule: Schedule,
    steps: int,
    gamma: float,
    **options,
) -> Dict[str, Variant]:
    """:func:`variant_eps_fns` for trained networks: the conditional and null predictions of
    ``model`` (a conditional noise predictor with a null label) for labels ``y``, eq. 170 in its
    one-pass form (:func:`batched_cfg_eps_fn`), and the conditional predictions of ``weak`` (a
    weaker model of the same task) for autoguidance. ``options``: those of :func:`variant_eps_fns`."""
    check_module(model)
    check_module(weak, "weak")
    check_built_for(schedule, model=model, weak=weak)
    cond_fn, uncond_fn = model.eps_fn(y), model.eps_fn(model.null_labels(len(y)))
    cfg_fn = batched_cfg_eps_fn(model, y, gamma)
    return variant_eps_fns(
        cond_fn, uncond_fn, schedule, steps, gamma, weak_fn=weak.eps_fn(y), cfg_fn=cfg_fn, **options
    )


# ---- the builders held against their equations written out (lab 7) ------------------------------


def cfg_gap(
    model: torch.nn.Module, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor, gamma: float
) -> float:
    """The largest |difference| between :func:`batched_cfg_eps_fn` (one stacked pass) and Luo
    eq. 170 written out from two separate passes of ``model``:
    gamma eps(x_t, y) + (1 - gamma) eps(x_t, null). Float rounding (about 1e-6) when the builder
    is right; test at a gamma other than 0 and 1, where the stacked pass runs."""
    gamma = _check_gamma(gamma)
    check_module(model)
    check_tensor(x_t, "x_t", floating=True, nonempty=True)
    check_finite(x_t, "x_t")  # a NaN row made the largest gap NaN, which no bound catches
    with torch.no_grad(), full_precision():  # no TF32: its rounding depends on the batch
        cond = model(x_t, t, y)
        uncond = model(x_t, t, model.null_labels(x_t.shape[0]))
        guided = batched_cfg_eps_fn(model, y, gamma)(x_t, t)
        return (guided - (gamma * cond + (1 - gamma) * uncond)).abs().max().item()


@full_precision()  # no TF32 (see cfg_gap)
def classifier_guidance_gap(
    classifier: torch.nn.Module,
    model: torch.nn.Module,
    x_t: torch.Tensor,
    t: torch.Tensor,
    y: torch.Tensor,
    schedule: Schedule,
    gamma: float,
) -> float:
    """The largest |difference| between :func:`classifier_guided_eps_fn` (on ``model``'s null-label
    prediction and :func:`classifier_grad_fn` of ``classifier``) and Luo eq. 166 in noise form
    written out: eps(x_t, null) - gamma sqrt(1 - alpha_bar_t) grad_{x_t} log p(y | x_t, t), the
    gradient taken here by autograd. Float rounding when the builder is right."""
    gamma = _check_gamma(gamma)
    check_module(classifier, "classifier")
    check_module(model)
    check_built_for(schedule, classifier=classifier, model=model)
    check_finite(check_tensor(x_t, "x_t", floating=True, nonempty=True), "x_t")  # as cfg_gap
    x = x_t.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(classifier.log_prob(x, t, y).sum(), x)
    ab = schedule.alpha_bar.to(x_t.device)[t].to(x_t.dtype)
    sigma = (1 - ab).sqrt().reshape(-1, *[1] * (x_t.ndim - 1))
    null = model.null_labels(x_t.shape[0])
    guided_fn = classifier_guided_eps_fn(
        model.eps_fn(null), classifier_grad_fn(classifier, y), schedule, gamma
    )
    with torch.no_grad():
        written = model(x_t, t, null) - gamma * sigma * grad
        return (guided_fn(x_t, t) - written).abs().max().item()


# ---- the implicit classifier for any labels (chapter 5's measurements) ----------------------------


def implicit_grad_for(eps_for: Callable[..., Fn], schedule: Schedule) -> Callable[..., Fn]:
    """``grad_for(y)``: the implicit classifier of Luo eq. 167 for labels ``y``,
    :func:`implicit_classifier_grad_fn` of ``eps_for(y)`` and ``eps_for()``. ``eps_for`` is a
    conditional model's ``eps_fn`` (no labels: the null label) or
    ``functools.partial(exact_eps_fn, mixture, schedule)`` (no labels: p_t(x_t)); the result plugs
    into :func:`diffcourse.metrics.relative_grad_error` like an explicit classifier's gradient."""
    check_callable(eps_for, "eps_for")
    check_schedule(schedule)
    return lambda y: implicit_classifier_grad_fn(eps_for(y), eps_for(), schedule)


def batched_against_two(
    model: torch.nn.Module,
    y: torch.Tensor,
    gamma: float,
    sample: Callable[[Fn], torch.Tensor],
    batched: Optional[Tuple[float, torch.Tensor]] = None,
) -> List[float]:
    """``[seconds batched, seconds two passes, largest gap]``: one run of ``sample(eps_fn)`` guided
    by eq. 170 with the stacked batch (:func:`batched_cfg_eps_fn`, one forward pass per step) and
    one with two calls per step (:func:`classifier_free_eps_fn` of ``model.eps_fn(y)`` and
    ``model.eps_fn()``), each timed device-synchronised, and the largest difference between their
    samples (float rounding only, when both start from the same noise). ``batched``, a pair
    (seconds, samples) of a stacked run already made with the same ``sample``, is reused."""
    from .device import timed

    check_module(model, "model")
    check_callable(sample, "sample")
    two = classifier_free_eps_fn(model.eps_fn(y), model.eps_fn(), gamma)
    s2, x2 = timed(lambda: sample(two))
    name = "sample's samples" if batched is None else "batched: samples"
    if batched is None:
        one = batched_cfg_eps_fn(model, y, gamma)
        batched = timed(lambda: sample(one))
    elif not isinstance(batched, (tuple, list)) or len(batched) != 2:
        raise TypeError("batched must be a pair (seconds, samples) of a stacked run, or None")
    s1, x1 = batched
    check_real(s1, "batched: seconds", low=0)
    # no sample: the largest gap fails inside torch; a NaN one: the gap is NaN
    check_finite(
        check_tensor(x2, "sample's samples", floating=True, nonempty=True), "sample's samples"
    )
    check_finite(check_tensor(x1, name, floating=True, shape=tuple(x2.shape)), name)
    return [s1, s2, (x1 - x2).abs().max().item()]
