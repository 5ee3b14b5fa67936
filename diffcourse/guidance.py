"""Guidance rules: how a conditional score is assembled from simpler pieces.

Both rules act on tensors of one shape (scores, or noise predictions for eq. 170) and know
nothing about networks or samplers. gamma is the paper's guidance scale; other names for it:
Dhariwal & Nichol's classifier scale = gamma, diffusers' ``guidance_scale`` = gamma,
Ho & Salimans' w = gamma - 1.

The variants of chapter 8 and how each meets eq. 170, eps = gamma eps_c + (1 - gamma) eps_u:
- :func:`interval_cfg_eps_fn`: eq. 170 on an interval of t, eps_c elsewhere; all of 0..T-1 is eq. 170.
- :func:`rescaled_cfg`: eq. 170, then each sample rescaled to eps_c's spread; phi = 0 is eq. 170.
- :func:`autoguidance_eps_fn`: eq. 170 with a weaker conditional model for eps_u; with the
  unconditional model as the weak one it is eq. 170.
- :func:`apg_eps_fn`: eq. 170 in x0 space, its update clipped in norm, its part along D_c scaled by
  eta, with momentum; eta = 1, r = inf, beta = 0 is eq. 170.
- :func:`dynamic_threshold_eps_fn`: clips x0_hat of any eps_fn (usually eq. 170's); where no x0_hat
  exceeds 1 in magnitude it changes nothing.
- :func:`cfgpp_eps_fn`: eq. 170 with lam for gamma in x0_hat only, eps_u for DDIM's direction; not
  eq. 170 at any lam > 0, and lam = 0 is unconditional DDIM.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch

from .models import check_labels
from .schedules import Schedule, _gather
from .targets import eps_to_x0, x0_to_eps

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PairFn = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


def _check_real(value, name: str) -> float:
    """A real number (not a bool), or TypeError naming ``name``; NaN is a ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return float(value)


def _check_gamma(gamma) -> float:
    gamma = _check_real(gamma, "gamma")
    if not math.isfinite(gamma) or gamma < 0:
        raise ValueError(f"gamma must be finite and >= 0, got {gamma}")
    return gamma


def _check_pair(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    for name, v in ((name_a, a), (name_b, b)):
        if not isinstance(v, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor")
    if a.shape != b.shape:
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")
    if a.dtype != b.dtype:
        raise TypeError(f"{name_a} ({a.dtype}) and {name_b} ({b.dtype}) must have the same dtype")
    if a.device != b.device:
        raise ValueError(f"{name_a} ({a.device}) and {name_b} ({b.device}) must be on the same device")


def classifier_guidance(score_uncond: torch.Tensor, classifier_grad: torch.Tensor, gamma: float) -> torch.Tensor:
    """grad log p(x_t) + gamma grad log p(y|x_t)  (Luo eq. 166).

    gamma = 0 ignores y, gamma = 1 gives the conditional score (eq. 165), gamma > 1 sharpens.
    """
    gamma = _check_gamma(gamma)
    _check_pair(score_uncond, classifier_grad, "score_uncond", "classifier_grad")
    return score_uncond + gamma * classifier_grad


def classifier_free_guidance(cond: torch.Tensor, uncond: torch.Tensor, gamma: float) -> torch.Tensor:
    """gamma cond + (1 - gamma) uncond  (Luo eq. 170).

    ``cond``/``uncond`` are both scores or both noise predictions: the rule is linear, and
    score = -eps / sqrt(1 - alpha_bar) scales both alike, so one form gives the other.
    """
    gamma = _check_gamma(gamma)
    _check_pair(cond, uncond, "cond", "uncond")
    return gamma * cond + (1 - gamma) * uncond


# ---- wrappers: guidance turns models into a new eps_fn(x_t, t) for any sampler ----------------------

def classifier_grad_fn(classifier: torch.nn.Module, y: torch.Tensor) -> Fn:
    """grad_{x_t} log p_phi(y | x_t, t) of a noise-aware classifier, by autograd, as ``grad_fn(x_t, t)``.

    ``classifier.log_prob(x_t, t, y)`` gives log p_phi(y | x_t, t); gradients are taken even inside a
    sampler's ``torch.no_grad()``, and only with respect to x_t."""
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
    sigma = (1 - schedule.alpha_bar).sqrt()

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x_t, t)
        if gamma == 0:                      # gamma = 0 ignores y: skip the classifier's cost
            return eps
        return classifier_guidance(eps, -_gather(sigma, t, x_t) * grad_fn(x_t, t).to(eps.dtype), gamma)
    return guided


def classifier_free_eps_fn(cond_fn: Fn, uncond_fn: Fn, gamma: float) -> Fn:
    """Classifier-free guidance (Luo eq. 170) from two noise predictors, as a sampler's ``eps_fn``:
    gamma eps(x_t, t, y) + (1 - gamma) eps(x_t, t, null). Two calls per step; for exact scores,
    or any pair of predictors. A network that takes the null label does better with
    :func:`batched_cfg_eps_fn`: one forward pass."""
    gamma = _check_gamma(gamma)
    if gamma in (0.0, 1.0):            # one branch has weight 0: skip it, the result is the other
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
    null_label = getattr(model, "null_label", None)
    if not getattr(model, "num_classes", 0) or null_label is None:
        raise ValueError("model must be conditional, with a null label (num_classes > 0)")
    n = y.shape[0] if isinstance(y, torch.Tensor) and y.ndim == 1 else -1
    # guidance asks for a real class: the null label is refused
    y = check_labels(y, n, model.num_classes, next(model.parameters()).device, allow_null=False)
    labels = torch.cat([y, torch.full_like(y, null_label)])

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] != y.shape[0]:
            raise ValueError(f"x_t has {x_t.shape[0]} rows but y has {y.shape[0]}")
        if gamma in (0.0, 1.0):
            return model(x_t, t, y if gamma == 1 else labels[y.shape[0]:])
        cond, uncond = model(torch.cat([x_t, x_t]), torch.cat([t, t]), labels).chunk(2)
        return classifier_free_guidance(cond, uncond, gamma)
    return guided


# ---- variants of eq. 170 (chapter 8) -------------------------------------------------------------------

def rescaled_cfg(cond: torch.Tensor, uncond: torch.Tensor, gamma: float, phi: float = 0.7) -> torch.Tensor:
    """Rescaled classifier-free guidance (Lin et al. 2024, WACV; arXiv 2023, Algorithm 2): eq. 170, then each sample's
    guided prediction is rescaled to the standard deviation of its conditional prediction, and the
    two are mixed, ``phi`` rescaled + (1 - phi) plain. phi = 0 is eq. 170; gamma = 1 is ``cond`` for
    every phi. Lin et al. apply it to v-predictions; diffusers applies it to noise predictions."""
    if isinstance(phi, bool) or not isinstance(phi, (int, float)) or not 0 <= phi <= 1:
        raise ValueError(f"phi must lie in [0, 1], got {phi!r}")
    guided = classifier_free_guidance(cond, uncond, gamma)
    dims = tuple(range(1, cond.ndim))
    scale = cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True).clamp(min=1e-12)
    return phi * guided * scale + (1 - phi) * guided


def interval_cfg_eps_fn(cond_fn: Fn, uncond_fn: Fn, gamma: float, t_low: int, t_high: int) -> Fn:
    """Guidance limited to an interval of noise levels (Kynkäänniemi et al. 2024): eq. 170 at the
    0-based steps t_low <= t <= t_high, the plain conditional prediction (gamma = 1) elsewhere. Their
    finding: guidance at high noise costs diversity and at low noise does little, so the middle is
    where it pays. t_low = 0, t_high = T - 1 is :func:`classifier_free_eps_fn`."""
    gamma = _check_gamma(gamma)
    if not (isinstance(t_low, int) and isinstance(t_high, int)) or not 0 <= t_low <= t_high:
        raise ValueError(f"need ints 0 <= t_low <= t_high, got t_low={t_low!r}, t_high={t_high!r}")

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = cond_fn(x_t, t)
        inside = (t >= t_low) & (t <= t_high)
        if not bool(inside.any()):
            return cond                               # no unconditional pass outside the interval
        full = classifier_free_guidance(cond, uncond_fn(x_t, t), gamma)
        return torch.where(inside.reshape(-1, *[1] * (x_t.ndim - 1)), full, cond)
    return guided


def autoguidance_eps_fn(good_fn: Fn, weak_fn: Fn, gamma: float) -> Fn:
    """Autoguidance (Karras et al. 2024): eq. 170 with a *weaker conditional* model (smaller, or
    trained for less long, on the same task) in place of the unconditional one,
    gamma eps_good(x_t, t, y) + (1 - gamma) eps_weak(x_t, t, y). It extrapolates away from the weak
    model's errors rather than away from other classes, so it sharpens quality with less loss of
    variety. Both callables take the same label; the arithmetic is :func:`classifier_free_eps_fn`'s."""
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
    lam = _check_real(lam, "lam")
    if not 0 <= lam <= 1:
        raise ValueError(f"lam must lie in [0, 1] (Chung et al.'s range), got {lam}")

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        uncond = uncond_fn(x_t, t)
        if lam == 0:                                  # unconditional DDIM: skip the conditional pass
            return uncond, uncond
        return classifier_free_guidance(cond_fn(x_t, t), uncond, lam), uncond
    return guided


class APGEpsFn:
    """The callable :func:`apg_eps_fn` returns. It carries the momentum of the guidance update from
    one call to the next, so call :meth:`reset` (or build a new one) before each sampling run."""

    def __init__(self, cond_fn: Fn, uncond_fn: Fn, schedule: Schedule, gamma: float, eta: float,
                 r: float, beta: float):
        self.cond_fn, self.uncond_fn, self.schedule = cond_fn, uncond_fn, schedule
        self.gamma, self.eta, self.r, self.beta = gamma, eta, r, beta
        self.average: Optional[torch.Tensor] = None    # the running update, Delta_m of the last call

    def reset(self) -> None:
        """Forget the momentum: the next call starts a new run."""
        self.average = None

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = self.cond_fn(x_t, t)
        if self.gamma == 1:                  # the update is multiplied by gamma - 1 = 0: skip its pass
            return cond
        a = _gather(self.schedule.alpha_bar, t, x_t)
        d_cond, d_uncond = eps_to_x0(x_t, cond, a), eps_to_x0(x_t, self.uncond_fn(x_t, t), a)
        delta = d_cond - d_uncond
        if self.beta != 0:                   # momentum: Delta_m = Delta + beta Delta_m(previous call)
            if self.average is not None and self.average.shape != delta.shape:
                raise ValueError(f"x_t of shape {tuple(x_t.shape)} after a run of shape "
                                 f"{tuple(self.average.shape)}: call reset() between sampling runs")
            delta = delta if self.average is None else delta + self.beta * self.average
            self.average = delta
        view = (-1,) + (1,) * (x_t.ndim - 1)          # per-sample norms over all non-batch dims
        if math.isfinite(self.r):            # clip each sample's update to the ball of radius r
            delta = delta * (self.r / delta.flatten(1).norm(dim=1)).clamp(max=1).view(view)
        unit = torch.nn.functional.normalize(d_cond.flatten(1), dim=1).view_as(d_cond)
        parallel = (delta * unit).flatten(1).sum(dim=1).view(view) * unit
        guided = d_cond + (self.gamma - 1) * (delta - parallel + self.eta * parallel)
        return x0_to_eps(x_t, guided, a)


def apg_eps_fn(cond_fn: Fn, uncond_fn: Fn, schedule: Schedule, gamma: float, eta: float = 0.0,
               r: float = math.inf, beta: float = 0.0) -> APGEpsFn:
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
    gamma = 1 is ``cond_fn``. The result holds momentum: see :class:`APGEpsFn`. Momentum counts
    calls, so it is meant for one call per level (DDPM, DDIM), not a corrector's extra calls.
    """
    gamma = _check_gamma(gamma)
    eta, r, beta = _check_real(eta, "eta"), _check_real(r, "r"), _check_real(beta, "beta")
    if not math.isfinite(eta):
        raise ValueError(f"eta must be finite, got {eta}")
    if not r > 0:
        raise ValueError(f"r must be > 0 (math.inf: no clipping), got {r}")
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    return APGEpsFn(cond_fn, uncond_fn, schedule, gamma, eta, r, beta)


def dynamic_threshold_eps_fn(eps_fn: Fn, schedule: Schedule, percentile: float = 0.995) -> Fn:
    """Dynamic thresholding (Saharia et al., NeurIPS 2022, arXiv:2205.11487, Sec. 2.3) around any
    ``eps_fn``, typically a guided one: per sample, s = max(the ``percentile`` quantile of
    |x0_hat|, 1); x0_hat is clipped to [-s, s] and divided by s, then turned back into noise.

    Large gamma pushes x0_hat out of the data's range [-1, 1] and saturates the samples; this pulls
    the outliers in without flattening the rest. Samples with s = 1 (their quantile is within 1) keep
    their prediction bit for bit, even where a few entries past the quantile exceed 1; percentile = 1
    takes the max and bounds every entry. With DDPM it is Imagen's sampler; DDIM then uses the
    thresholded noise for its direction too.
    """
    p = _check_real(percentile, "percentile")
    if not 0 < p <= 1:
        raise ValueError(f"percentile must lie in (0, 1], got {percentile}")

    def thresholded(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = eps_fn(x_t, t)
        a = _gather(schedule.alpha_bar, t, x_t)
        x0 = eps_to_x0(x_t, eps, a)
        s = torch.quantile(x0.abs().flatten(1), p, dim=1).clamp(min=1).view(-1, *[1] * (x_t.ndim - 1))
        if not bool((s > 1).any()):
            return eps
        clipped = torch.maximum(torch.minimum(x0, s), -s) / s
        return torch.where(s > 1, x0_to_eps(x_t, clipped, a), eps)    # untouched rows: no round trip
    return thresholded


# ---- chapter 12: independent condition guidance and feedback guidance -------------------------------------

LabelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def independent_condition_eps_fn(model: LabelFn, y: torch.Tensor, gamma: float, num_classes: int,
                                 generator: Optional[torch.Generator] = None) -> Fn:
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
    gamma = _check_gamma(gamma)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long or y.ndim != 1:
        raise TypeError("y must be a LongTensor [N] of labels")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"y must lie in 0..{num_classes - 1}")
    device = generator.device if generator is not None else y.device
    y_rand = torch.randint(0, num_classes, y.shape, generator=generator, device=device).to(y.device)

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond = model(x_t, t, y)
        if gamma == 1:                       # the random branch has weight 0: skip its pass
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


def feedback_eps_fn(cond_fn: Fn, uncond_fn: Fn, log_ratio_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    pi: float, max_gamma: float = 10.0) -> Fn:
    """Feedback guidance (FBG; Koulischer, Handke, Deleu, Demeester & Ambrogioni 2025,
    arXiv:2506.06085) as an ``eps_fn``: eq. 170 with a scale per sample and per level,
    gamma(x_t, t) = :func:`feedback_scale` of ``log_ratio_fn(x_t, t)`` = log p_t(y|x_t) - log p(y).

    The paper estimates that ratio from the sampler's own steps (the feedback of its name); on a
    mixture it is exact (``mixture.exact_log_ratio_fn``). Where the ratio is the same for every
    sample and level the rule is eq. 170 at that one gamma. Two evaluations per level.
    """
    feedback_scale(torch.zeros(1), pi, max_gamma)          # check pi and max_gamma once, not per step

    def guided(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gamma = feedback_scale(log_ratio_fn(x_t, t).to(x_t.dtype), pi, max_gamma)
        gamma = gamma.reshape(-1, *[1] * (x_t.ndim - 1))
        cond, uncond = cond_fn(x_t, t), uncond_fn(x_t, t)
        return gamma * cond + (1 - gamma) * uncond         # eq. 170, one gamma per row
    return guided
