"""The measurements behind chapter 12's claims, each a loop over scales, dimensions or samplers
with exact scores on a Gaussian mixture. The lab calls them, shows their tables and asserts what the
chapter states; the claims themselves, and what counts as holding, live in the chapter and its lab.
Labs 6, 8b and 8c use the loops too, and :func:`is_monotone` is the test of an order (a rise or a
fall, step by step, by more than a margin) that the labs' asserts share.

Every function draws its starting noise from :func:`~diffcourse.samplers.seeded_noise` (chapter 6's
:func:`langevin_settled` and :func:`pc_gaussian_ratio`: from one generator seeded with ``seed``) and
its sampler noise from a generator seeded alike, so the same arguments give the same numbers.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import torch

from .checks import (
    check_bool,
    check_callable,
    check_device,
    check_finite,
    check_int,
    check_ints,
    check_levels,
    check_mapping,
    check_mixture,
    check_module,
    check_real,
    check_reals,
    check_schedule,
    check_span,
    check_tensor,
    same_device,
)
from .data import round_mixture
from .device import full_precision
from .guidance import classifier_free_eps_fn, classifier_free_guidance, interval_cfg_eps_fn
from .leaderboard import mode_coverage
from .metrics import knn_entropy, mean_along
from .mixture import (
    GaussianMixture,
    class_mixture,
    exact_cfg_eps_fn,
    exact_eps_fn,
    gaussian,
    tilted_log_prob,
)
from .report import progress_bar
from .samplers import ddim_sample, ddpm_sample, langevin_step, pc_sample, seeded_noise
from .schedules import Schedule, q_sample

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def samplers(
    schedule: Schedule, levels: int = 25, seed: int = 2
) -> Dict[str, Callable[[Fn, torch.Tensor], torch.Tensor]]:
    """``{"DDPM": run, "DDIM": run}``: ancestral DDPM on every level (its noise seeded by ``seed``)
    and DDIM (eta = 0) on ``levels`` levels, each ``run(eps_fn, x_T) -> x_0``."""
    check_schedule(schedule)
    levels, seed = check_int(levels, "levels", low=1, high=schedule.T), check_int(seed, "seed")

    def ddpm(eps_fn: Fn, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=x.device).manual_seed(seed)
        return ddpm_sample(eps_fn, x, schedule, generator=gen, progress=False)

    def ddim(eps_fn: Fn, x: torch.Tensor) -> torch.Tensor:
        return ddim_sample(eps_fn, x, schedule, steps=levels, progress=False)

    return {"DDPM": ddpm, "DDIM": ddim}


def exact_cfg(
    mixture: GaussianMixture, schedule: Schedule, y: int, gamma: float, cond: Optional[Fn] = None
) -> Fn:
    """Eq. 170 on the mixture's exact predictions (the conditional one from class y's components
    alone), or with ``cond`` in place of the exact conditional prediction."""
    if cond is None:
        cond = exact_eps_fn(class_mixture(mixture, y), schedule)
    check_callable(cond, "cond")
    return classifier_free_eps_fn(cond, exact_eps_fn(mixture, schedule), gamma)


# ---- claim 1: dimension ------------------------------------------------------------------------------


def two_classes(d: int, mu: float = 0.5, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """N(m, I) (class 0) and N(-m, I) (class 1) in ``d`` dimensions, m = ``mu`` in every coordinate,
    so |m| = mu sqrt(d): the setting in which Pavasovic et al. (2025) study guidance as d grows."""
    d = check_int(d, "d", low=1)
    m = torch.full((d,), check_real(mu, "mu"), dtype=torch.float64)
    return round_mixture(torch.stack([m, -m]), 1.0, [0, 1], dtype)


def _n_and_seed(n, seed) -> Tuple[int, int]:
    """A run's number of samples and its seed, checked before they reach the noise's shape."""
    return check_int(n, "n", low=1), check_int(seed, "seed")


def _class(mixture: GaussianMixture, y) -> int:
    """``y`` as a class of ``mixture``: an int in 0..C-1."""
    return check_int(y, "y", low=0, high=check_mixture(mixture).num_classes - 1)


def reduction_gap(
    d: int,
    schedule: Schedule,
    gamma: float,
    mu: float = 0.5,
    n: int = 256,
    seed: int = 3,
    device=None,
) -> float:
    """Largest difference between a d-dimensional guided DDIM run of :func:`two_classes`, projected on
    m / |m|, and the one-dimensional run with classes at +-mu sqrt(d) from the projected noise. Orthogonal
    to m both exact scores are -x, so guidance acts along m alone: the difference is rounding."""
    d, gamma = check_int(d, "d", low=1), check_real(gamma, "gamma", low=0)
    check_schedule(schedule)
    n, seed = _n_and_seed(n, seed)
    z = seeded_noise((n, d), seed, device, torch.float64)
    unit = torch.full((d, 1), d**-0.5, dtype=torch.float64, device=z.device)
    run = samplers(schedule)["DDIM"]
    full = run(exact_cfg(two_classes(d, mu).to(z.device), schedule, 0, gamma), z) @ unit
    line = run(
        exact_cfg(two_classes(1, mu * math.sqrt(d)).to(z.device), schedule, 0, gamma), z @ unit
    )
    return (full - line).abs().max().item()


def dimension_sweep(
    dims: Sequence[int],
    schedule: Schedule,
    gamma: float,
    mu: float = 0.5,
    n: int = 20000,
    seed: int = 4,
    device=None,
) -> Dict[Tuple[int, str], Tuple[float, float]]:
    """For each d: guided samples of class 0 of :func:`two_classes` (through the exact 1-D reduction,
    classes at +-mu sqrt(d)), with DDPM and with DDIM on every level: ``{(d, sampler): (shift, std)}``,
    shift = their mean along m beyond the class mean, std = their standard deviation along m (both
    in units of the class's standard deviation, 1)."""
    dims = check_ints(dims, "dims", low=1)
    gamma, mu = check_real(gamma, "gamma", low=0), check_real(mu, "mu")
    n, seed = _n_and_seed(n, seed)
    z = seeded_noise((n, 1), seed, device, torch.float64)
    runs = samplers(check_schedule(schedule), levels=schedule.T)
    out = {}
    for d in dims:
        sep = mu * math.sqrt(d)
        fn = exact_cfg(two_classes(1, sep).to(z.device), schedule, 0, gamma)
        for name, run in runs.items():
            u = run(fn, z)
            out[d, name] = (u.mean().item() - sep, u.std().item())
    return out


# ---- claim 2: confidence and entropy ------------------------------------------------------------------


def confidence_and_entropy(
    mixture: GaussianMixture,
    y: int,
    gammas: Sequence[float],
    schedule: Schedule,
    n: int = 4000,
    seed: int = 5,
    levels: int = 25,
) -> Dict[Tuple[str, float], Tuple[float, float]]:
    """``{(sampler, gamma): (confidence, entropy)}`` of eq. 170's samples of class y: the mean exact
    p(y|x) over the samples, and their differential entropy (:func:`~diffcourse.metrics.knn_entropy`)."""
    n, y = check_int(n, "n", low=1), _class(mixture, y)
    gammas = check_reals(gammas, "gammas", low=0)
    z = seeded_noise((n, mixture.dim), seed, mixture.device, mixture.dtype)
    out = {}
    for name, run in samplers(schedule, levels).items():
        for g in gammas:
            x = run(exact_cfg(mixture, schedule, y, g), z)
            out[name, g] = (
                mixture.class_log_posterior(x)[:, y].exp().mean().item(),
                knn_entropy(x),
            )
    return out


# ---- claim 3: the edge of the support ---------------------------------------------------------------


def interval_classes(components: int = 21, std: float = 0.02) -> GaussianMixture:
    """One dimension: class 0 spread evenly over [1, 2], class 1 over [-2, -1], each a chain of
    ``components`` narrow Gaussians of standard deviation ``std``: classes with a compact support
    (to a few std), as in Chidambaram et al. (2024), whose exact scores are still known."""
    ends = torch.linspace(1, 2, check_int(components, "components", low=2))
    return round_mixture(
        torch.cat([ends, -ends])[:, None], std, [0] * components + [1] * components
    )


def edge_and_support(
    mixture: GaussianMixture,
    schedule: Schedule,
    gammas: Sequence[float],
    errors: Sequence[float],
    far: Tuple[float, float],
    support: Tuple[float, float],
    n: int = 4000,
    seed: int = 6,
    levels: int = 100,
) -> Dict[Tuple[float, str, float], Tuple[float, float]]:
    """Eq. 170 for class 0 of a 1-D mixture, with a constant ``error`` added to the exact conditional
    noise prediction: ``{(error, sampler, gamma): (share in far, share outside support)}``, the
    intervals given as (low, high)."""
    if check_mixture(mixture).dim != 1:
        raise ValueError(f"mixture must be one-dimensional, got dim {mixture.dim}")
    check_schedule(schedule)
    gammas, errors = check_reals(gammas, "gammas", low=0), check_reals(errors, "errors")
    far, support = check_span(far, "far"), check_span(support, "support")
    n, seed = check_int(n, "n", low=1), check_int(seed, "seed")
    z = seeded_noise((n, 1), seed, mixture.device, mixture.dtype)
    cond = exact_eps_fn(class_mixture(mixture, 0), schedule)
    out = {}
    for err in errors:
        wrong = (lambda e: lambda x, t: cond(x, t) + e)(err)
        for name, run in samplers(schedule, levels).items():
            for g in gammas:
                x = run(exact_cfg(mixture, schedule, 0, g, wrong), z)
                inside_far = ((x > far[0]) & (x <= far[1])).double().mean().item()
                outside = ((x < support[0]) | (x > support[1])).double().mean().item()
                out[err, name, g] = (inside_far, outside)
    return out


# ---- claim 4: modes -----------------------------------------------------------------------------------


def noise_to_signal_levels(schedule: Schedule, low: float, high: float) -> Tuple[int, int]:
    """The first and last 0-based levels whose noise-to-signal ratio
    sqrt((1 - alpha_bar_t) / alpha_bar_t) lies in [low, high]."""
    ab = check_schedule(schedule).alpha_bar
    low, high = check_real(low, "low", low=0), check_real(high, "high", low=0)
    if low > high:
        raise ValueError(f"low must not exceed high, got {low} > {high}")
    ratio = ((1 - ab) / ab).sqrt()
    inside = ((ratio >= low) & (ratio <= high)).nonzero()[:, 0]
    if not len(inside):
        raise ValueError(f"no level has a noise-to-signal ratio in [{low}, {high}]")
    return int(inside[0]), int(inside[-1])


def coverage_by_span(
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    schedule: Schedule,
    spans: Dict[str, Optional[Tuple[int, int]]],
    n: int = 4000,
    seed: int = 7,
    levels: int = 25,
) -> Dict[str, float]:
    """Mode coverage (:func:`~diffcourse.leaderboard.mode_coverage`) of class y's DDIM samples with
    eq. 170 at ``gamma`` on the levels of each span (t_low, t_high), the conditional prediction
    elsewhere; a span of None guides nowhere."""
    y, gamma = _class(mixture, y), check_real(gamma, "gamma", low=0)
    check_schedule(schedule)
    check_mapping(spans, "spans", "dict name -> (t_low, t_high) or None", "span", kind=dict)
    for name, span in spans.items():
        if span is not None:
            check_levels(schedule, span, f"spans[{name!r}]")
    n, seed = _n_and_seed(n, seed)
    z = seeded_noise((n, mixture.dim), seed, mixture.device, mixture.dtype)
    cond, uncond = (
        exact_eps_fn(class_mixture(mixture, y), schedule),
        exact_eps_fn(mixture, schedule),
    )
    run = samplers(schedule, levels)["DDIM"]
    return {
        name: mode_coverage(
            run(cond if span is None else interval_cfg_eps_fn(cond, uncond, gamma, *span), z),
            mixture,
            y,
        )
        for name, span in spans.items()
    }


# ---- claim 5: feedback guidance's premise -----------------------------------------------------------


def additive_world(
    sharp: GaussianMixture, unconditional: GaussianMixture, pi: float
) -> GaussianMixture:
    """The conditional law feedback guidance assumes, p(x|y) = pi q(x|y) + (1 - pi) p(x), as one
    mixture (every component labelled 0) from q = ``sharp`` and p = ``unconditional``."""
    check_mixture(sharp, "sharp"), check_mixture(unconditional, "unconditional")
    if sharp.dim != unconditional.dim or not same_device(sharp.device, unconditional.device):
        raise ValueError("sharp and unconditional must share one dimension and one device")
    pi = check_real(pi, "pi", low=0, high=1, low_open=True)
    return GaussianMixture(
        torch.cat([sharp.means, unconditional.means]),
        torch.cat([sharp.covs, unconditional.covs]),
        torch.cat([pi * sharp.weights, (1 - pi) * unconditional.weights]),
        torch.zeros(
            sharp.num_components + unconditional.num_components,
            dtype=torch.long,
            device=sharp.device,
        ),
    )


def ratio_of_laws_fn(top: GaussianMixture, bottom: GaussianMixture, schedule: Schedule) -> Fn:
    """``log_ratio(x_t, t) = log top_t(x_t) - log bottom_t(x_t)`` (one step per call, as samplers
    call it): the ratio feedback guidance needs, here p_t(x|y) / p_t(x) of two separate mixtures."""
    check_mixture(top, "top"), check_mixture(bottom, "bottom"), check_schedule(schedule)

    def log_ratio(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = float(schedule.alpha_bar[int(t[0])])
        return top.diffuse(a).log_prob(x_t) - bottom.diffuse(a).log_prob(x_t)

    return log_ratio


def feedback_check(
    sharp: GaussianMixture,
    unconditional: GaussianMixture,
    pi: float,
    caps: Sequence[float],
    schedule: Schedule,
    n: int = 4000,
    seed: int = 8,
    levels: int = 100,
) -> Dict[str, float]:
    """Feedback guidance in the world it assumes (:func:`additive_world`), with the exact ratio.

    Returns ``"score error"``: the largest relative difference between feedback guidance's noise
    prediction (the largest cap) and q's exact one, on draws from q diffused to the 0-based level 30
    (the book's t = 31; where q has its mass); and, for each cap and for eq. 170 at the constant
    scale 1 / pi, the distance of DDIM samples (``levels`` levels) to exact draws from q over its
    noise floor."""
    from .guidance import feedback_eps_fn
    from .metrics import distance_to_exact, mixture_draw

    world = additive_world(sharp, unconditional, pi)
    caps = check_reals(caps, "caps", low=1, low_open=True)  # feedback guidance's largest gamma
    n, seed = _n_and_seed(n, seed)
    cond, uncond, target = (exact_eps_fn(m, schedule) for m in (world, unconditional, sharp))
    ratio = ratio_of_laws_fn(world, unconditional, schedule)
    runs = {f"feedback, cap {c:g}": feedback_eps_fn(cond, uncond, ratio, pi, c) for c in caps}
    runs["eq. 170, gamma = 1/pi"] = classifier_free_eps_fn(cond, uncond, 1 / pi)
    gen = torch.Generator(device=sharp.device).manual_seed(seed)
    x_t = sharp.diffuse(float(schedule.alpha_bar[30])).sample(2000, None, gen)[0]
    t = torch.full((2000,), 30, dtype=torch.long, device=sharp.device)
    best = runs[f"feedback, cap {max(caps):g}"](x_t, t)
    out = {
        "score error": ((best - target(x_t, t)).norm(dim=1) / target(x_t, t).norm(dim=1))
        .max()
        .item()
    }
    z = seeded_noise((n, sharp.dim), seed, sharp.device, sharp.dtype)
    run = samplers(schedule, levels)["DDIM"]
    for name, fn in runs.items():
        out[name] = distance_to_exact(run(fn, z), mixture_draw(sharp), seed=seed + 1)["ratio"]
    return out


# ---- claim 7: a random label for the null one -------------------------------------------------------


def stand_in_error(
    mixture: GaussianMixture,
    schedule: Schedule,
    levels: Sequence[int],
    n: int = 2000,
    seed: int = 13,
) -> torch.Tensor:
    """At each level: the relative error (:func:`~diffcourse.metrics.relative_score_error`) of the
    exact prediction at a random label (uniform, one per point, independent of x_t), taken as a
    stand-in for the unconditional prediction, over x_t from the forward process. ``seed`` draws
    the labels, ``seed + 1`` the points x_t (each level's own, as
    :func:`~diffcourse.metrics.relative_score_error` draws them)."""
    from .metrics import relative_score_error

    check_mixture(mixture), check_levels(schedule, levels, "levels")
    n, seed = _n_and_seed(n, seed)
    gen = torch.Generator(device=mixture.device).manual_seed(seed)
    labels = torch.randint(0, mixture.num_classes, (n,), generator=gen, device=mixture.device)
    return relative_score_error(
        exact_eps_fn(mixture, schedule, labels), mixture, schedule, levels, n=n, seed=seed + 1
    )


def learned_icg(
    model,
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    schedule: Schedule,
    n: int = 500,
    seed: int = 16,
    levels: int = 25,
) -> Dict[str, Tuple[float, float]]:
    """A trained conditional image denoiser with a null label (``model``; chapter 12 passes lab 7's
    U-Net, trained on the real digits) judged by a 64-D mixture: its DDIM samples of class y
    unguided, with eq. 170 and with ICG at ``gamma``, from one starting noise:
    ``{name: (class agreement, spread)}`` against the mixture's exact classifier and draws."""
    from .guidance import batched_cfg_eps_fn, independent_condition_eps_fn
    from .metrics import agreement_and_spread

    if not all(hasattr(check_module(model), a) for a in ("channels", "size", "num_classes")):
        raise TypeError(f"model must be an image denoiser (a UNet), got {type(model).__name__}")
    y, gamma = _class(mixture, y), check_real(gamma, "gamma", low=0)
    n, seed = check_int(n, "n", low=1), check_int(seed, "seed")
    levels = check_int(levels, "levels", low=1, high=check_schedule(schedule).T)
    dev = mixture.device
    labels = torch.full((n,), y, dtype=torch.long, device=dev)
    gen = torch.Generator(device=dev).manual_seed(seed)
    rules = {
        "unguided": batched_cfg_eps_fn(model, labels, 1.0),
        "eq. 170": batched_cfg_eps_fn(model, labels, gamma),
        "ICG": independent_condition_eps_fn(model, labels, gamma, model.num_classes, gen),
    }
    refs = {y: mixture.sample(n, y, generator=gen)[0]}
    z = seeded_noise((n, model.channels, model.size, model.size), seed, dev)
    return {
        name: agreement_and_spread(
            ddim_sample(fn, z, schedule, steps=levels, progress=False).reshape(n, -1),
            labels,
            mixture,
            refs,
        )
        for name, fn in rules.items()
    }


# ---- claim 6, read off the leaderboard ----------------------------------------------------------------


def ddpm_against_ddim(
    rows: Sequence[dict], kept: Dict[str, Dict[str, torch.Tensor]], sizes: Dict[str, int]
) -> Dict[str, Tuple[list, list]]:
    """For each mixture of a leaderboard run (:func:`~diffcourse.leaderboard.evaluate` rows and kept
    samples, ``sizes`` its n per seed): the seed gaps between eq. 170's DDIM and DDPM samples
    (:func:`~diffcourse.leaderboard.seed_gaps`), and which of the two samplers the exact tilted draws
    beat on every seed on the distance to the tilted law."""
    from .leaderboard import check_rows, robust_pairs, seed_gaps

    check_rows(rows)
    check_mapping(kept, "kept", "dict by mixture name", "mixture's samples", kind=dict)
    if not isinstance(sizes, dict):
        raise TypeError(f"sizes must be a dict by mixture name, got {type(sizes).__name__}")
    rules = ("eq. 170, DDIM", "eq. 170, DDPM")
    for name, samples in kept.items():  # each checked before any gap is measured
        if not isinstance(samples, dict) or not all(r in samples for r in rules):
            raise ValueError(f"kept[{name!r}] must hold the samples of {rules}, as evaluate keeps")
        if name not in sizes:
            raise ValueError(f"sizes must give n for every mixture of kept, lacks {name!r}")
    out = {}
    for name, samples in kept.items():
        gaps = seed_gaps(samples["eq. 170, DDIM"], samples["eq. 170, DDPM"], sizes[name])
        pairs = robust_pairs(rows, "to_tilted", name)
        beaten = [
            s
            for s in ("DDPM", "DDIM")
            if ("exact draws from the tilted law", f"eq. 170, {s}") in pairs
        ]
        out[name] = (gaps, beaten)
    return out


def is_monotone(
    values: Sequence[float], increasing: bool = True, strict: bool = True, margin: float = 0.0
) -> bool:
    """Whether ``values`` rise (or fall, ``increasing=False``) from each one to the next, strictly or
    not, by more than ``margin`` (at least ``margin`` where not strict). A positive margin asks each
    step to clear the measurement's noise; a negative one tolerates a step back of that size."""
    check_bool(strict, "strict")
    margin = check_real(margin, "margin")
    values, sign = check_reals(values, "values"), 1 if check_bool(increasing, "increasing") else -1
    steps = [sign * (b - a) for a, b in zip(values, values[1:])]
    return all(s > margin for s in steps) if strict else all(s >= margin for s in steps)


# ---- chapter 8: each guidance variant against its formula, at one step -------------------------


class VariantGaps(NamedTuple):
    """What :func:`variant_formula_gaps` returns: the largest gap of each variant's ``eps_fn`` to the
    formula written out, and the fraction of images that dynamic thresholding changes at that step
    (those with an entry of x0_hat outside [-1, 1]) and the fraction it divides by s > 1 (the dynamic
    part, beyond a plain clip)."""

    gaps: Dict[str, float]
    clipped: float
    scaled: float


@torch.no_grad()
@full_precision()  # the formulas to float rounding: no TF32, whose rounding depends on the batch
def variant_formula_gaps(
    model: torch.nn.Module,
    weak: torch.nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    schedule: Schedule,
    steps: int,
    gamma: float,
) -> VariantGaps:
    """Chapter 8's variants as :func:`~diffcourse.guidance.model_variants` builds them for a DDIM
    run on ``steps`` levels, each held at one step against its formula written out here.

    ``model`` is a conditional noise predictor with a null label, ``weak`` a weaker one of the same
    task (autoguidance); x0 (held-out images) and their labels y are noised (seeded by the level)
    to the middle step t of the interval [lo, hi] of :func:`~diffcourse.schedules.nsr_interval`,
    to lo // 2 below it and half-way from hi to the last step above it. With c, u, w the
    conditional, null and weak predictions there and D(e) = (x_t - sqrt(1 - alpha_bar_t) e) /
    sqrt(alpha_bar_t), chapter 1's clean estimate:

    - eq. 170, cfg = gamma c + (1 - gamma) u (Luo eq. 170); the interval's eps_fn is cfg inside,
      c below and above it;
    - rescaled: phi cfg std(c) / std(cfg) + (1 - phi) cfg, phi = 0.7, std per image (diffusers');
    - rescaled, v: the same on V(e) = (e - sqrt(1 - alpha_bar_t) x_t) / sqrt(alpha_bar_t), the
      v-predictions, turned back by e = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t (Lin et al.);
    - autoguidance: gamma c + (1 - gamma) w (Karras et al.);
    - APG, eta = 0, beta = -0.5: D = D(c) + (gamma - 1)(Delta - Delta_par), Delta = D(c) - D(u) and
      Delta_par its projection on D(c); with beta = -0.5 the running average makes Delta half of
      itself on a second call at the same x_t and three quarters on a third (Delta + beta Delta / 2;
      a look-back to the raw Delta would give a half again) (Sadat et al.);
    - CFG++ at lam = :func:`~diffcourse.guidance.lam_matching`: the pair (u + lam (c - u), u);
    - thresholding: D(cfg) clipped to [-s, s] and divided by s, s = max(1, the 99.5th percentile
      of |D(cfg)|) per image (Saharia et al.).

    Returns each gap (largest absolute difference) by name, the fraction of images with an entry
    of D(cfg) outside [-1, 1], which thresholding changes, and the fraction with s > 1."""
    from .guidance import lam_matching, model_variants
    from .schedules import nsr_interval, q_sample_at

    # no image: torch's quantile fails; a NaN pixel: every gap NaN, which no bound catches
    check_finite(check_tensor(x0, "x0", floating=True, ndim=4, nonempty=True), "x0")
    y = check_tensor(y, "y", floating=False, shape=(x0.shape[0],))
    gamma = check_real(gamma, "gamma", low=0)
    fn = {k: v.eps_fn for k, v in model_variants(model, weak, y, schedule, steps, gamma).items()}
    c_fn, u_fn = fn["conditional"], model.eps_fn(model.null_labels(len(y)))
    lo, hi = nsr_interval(schedule)
    lam = lam_matching(schedule, steps, gamma)
    x_t, t = q_sample_at(x0, (lo + hi) // 2, schedule)
    x_low, t_low = q_sample_at(x0, lo // 2, schedule)
    if hi >= schedule.T - 1:
        raise ValueError(f"the interval reaches the last step ({hi}): no level above it to check")
    x_high, t_high = q_sample_at(x0, (hi + schedule.T) // 2, schedule)
    ab = schedule.alpha_bar[(lo + hi) // 2]

    def per_image(v: torch.Tensor) -> torch.Tensor:  # one number per image, over its pixels
        return v.reshape(-1, 1, 1, 1)

    def std(e: torch.Tensor) -> torch.Tensor:
        return per_image(e.flatten(1).std(1))

    def to_x0(eps: torch.Tensor) -> torch.Tensor:
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()

    def rescaled(c: torch.Tensor, cfg: torch.Tensor) -> torch.Tensor:  # phi = 0.7
        return 0.7 * cfg * std(c) / std(cfg) + 0.3 * cfg

    c, u, w = c_fn(x_t, t), u_fn(x_t, t), weak.eps_fn(y)(x_t, t)
    cfg, auto = gamma * c + (1 - gamma) * u, gamma * c + (1 - gamma) * w  # eq. 170 twice
    x0_c, delta, x0_cfg = to_x0(c), to_x0(c) - to_x0(u), to_x0(cfg)
    v_c, v_cfg = ((e - (1 - ab).sqrt() * x_t) / ab.sqrt() for e in (c, cfg))
    in_v = ab.sqrt() * rescaled(v_c, v_cfg) + (1 - ab).sqrt() * x_t
    unit = x0_c / per_image(x0_c.flatten(1).norm(dim=1))
    par = per_image((delta * unit).flatten(1).sum(1)) * unit
    apg = x0_c + (gamma - 1) * (delta - par)  # eta_par = 0: no part along D(c)
    apg_m = x0_c + (gamma - 1) * (delta - par) / 2  # momentum: Delta - Delta / 2
    apg_3 = x0_c + (gamma - 1) * (delta - par) * 3 / 4  # Delta - (Delta / 2) / 2
    tau = per_image(x0_cfg.abs().flatten(1).quantile(0.995, 1).clamp(min=1))
    clip = torch.clamp(x0_cfg, -tau, tau) / tau  # at tau = 1 a clip to [-1, 1]
    pp = fn["CFG++"](x_t, t)
    checks = [  # (variant, its eps_fn's answer, the formula)
        ("interval, inside", fn["interval"](x_t, t), cfg),
        ("interval, below", fn["interval"](x_low, t_low), c_fn(x_low, t_low)),
        ("interval, above", fn["interval"](x_high, t_high), c_fn(x_high, t_high)),
        ("rescaled", fn["rescaled"](x_t, t), rescaled(c, cfg)),
        ("rescaled, v", fn["rescaled, v"](x_t, t), in_v),
        ("autoguidance", fn["autoguidance"](x_t, t), auto),
        ("APG, first call", to_x0(fn["APG"](x_t, t)), apg),
        ("APG, momentum", to_x0(fn["APG"](x_t, t)), apg_m),
        ("APG, third call", to_x0(fn["APG"](x_t, t)), apg_3),
        ("CFG++, x0 branch", pp[0], u + lam * (c - u)),
        ("CFG++, direction", pp[1], u),
        ("thresholding", to_x0(fn["thresholding"](x_t, t)), clip),
    ]
    gaps = {name: (a - b).abs().max().item() for name, a, b in checks}
    touched = (x0_cfg.abs() > 1).flatten(1).any(1)  # the images thresholding changes
    scaled = (tau > 1).double().mean().item()  # s > 1: more than a clip
    return VariantGaps(gaps, touched.double().mean().item(), scaled)


def variant_identities(
    cond_fn: Fn,
    uncond_fn: Fn,
    schedule: Schedule,
    noise: torch.Tensor,
    gamma: float,
    lam: float,
    levels: int = 20,
) -> Dict[str, float]:
    """Chapter 8's identities between variants of eq. 170, each the largest gap
    (:func:`~diffcourse.samplers.ddim_gap`) between two DDIM runs on ``levels`` levels from the same
    ``noise``, run against run:

    - "APG, all changes off: eq. 170": APG with eta = 1, r = inf, beta = 0 against eq. 170 (Luo
      eq. 170) at ``gamma``: the same sampler, up to float rounding (it goes through x0 and back);
    - "CFG++ at lam: gamma_eff": CFG++ at ``lam`` against eq. 170 with the per-level scale
      :func:`~diffcourse.guidance.cfgpp_gamma_eff`: the same sampler;
    - "CFG++ at lam: eq. 170 at lam": against eq. 170 at gamma = lam: not the same sampler."""
    from .guidance import apg_eps_fn, cfgpp_eps_fn, cfgpp_gamma_eff, per_level_cfg_eps_fn
    from .samplers import ddim_gap

    gamma, lam = check_real(gamma, "gamma", low=0), check_real(lam, "lam", low=0, high=1)
    levels = check_int(levels, "levels", low=1)
    pp = cfgpp_eps_fn(cond_fn, uncond_fn, lam)
    g_eff = cfgpp_gamma_eff(schedule, levels, lam)
    pairs = {
        "APG, all changes off: eq. 170": (
            apg_eps_fn(cond_fn, uncond_fn, schedule, gamma, eta=1.0),
            classifier_free_eps_fn(cond_fn, uncond_fn, gamma),
        ),
        f"CFG++ at {lam:g}: gamma_eff": (pp, per_level_cfg_eps_fn(cond_fn, uncond_fn, g_eff)),
        f"CFG++ at {lam:g}: eq. 170 at {lam:g}": (
            pp,
            classifier_free_eps_fn(cond_fn, uncond_fn, lam),
        ),
    }
    return {name: ddim_gap(a, b, noise, schedule, levels) for name, (a, b) in pairs.items()}


def variants_on_mixture(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: int,
    gamma: float,
    noise: torch.Tensor,
    steps: int,
    weak_fn: Fn,
    reference: torch.Tensor,
    seed: int = 2,
) -> Dict[str, Dict[str, float]]:
    """Chapter 8's comparison on a 2-D mixture with exact scores: the variants of eq. 170 that apply
    to it (:func:`~diffcourse.guidance.variant_eps_fns`: all but rescaling and thresholding, with
    ``weak_fn`` for autoguidance) at ``gamma``, each a DDIM run (eta = 0) on ``steps`` levels from
    ``noise``; then ancestral DDPM with eq. 170 on every level from the same noise (its generator
    seeded ``seed``) and exact draws from the tilted law p(x|y)^gamma p(x)^(1 - gamma) / Z by
    rejection (chapter 12's :func:`~diffcourse.mixture.sample_tilted_rejection`, seeded
    ``seed + 1``). Each row: class agreement, spread over that of ``reference`` (exact draws of
    p(x|y)), the distance to the tilted law over its noise floor (``"tilted"``, drawn on chapter 6's
    grid, :func:`~diffcourse.metrics.sample_set_metrics` with ``seed + 2``; so the rejection row
    holds two independent exact samplers against each other) and the network evaluations per sample
    (``"NFE"``)."""
    from .guidance import variant_eps_fns
    from .metrics import sample_set_metrics, tilted_draw
    from .mixture import sample_tilted_rejection

    check_tensor(noise, "noise", floating=True, ndim=2)
    seed, gamma = check_int(seed, "seed", low=0), check_real(gamma, "gamma", low=0)
    cond_fn, uncond_fn = exact_eps_fn(mixture, schedule, y), exact_eps_fn(mixture, schedule)
    names = ("conditional", "CFG", "interval", "autoguidance", "APG", "CFG++")
    variants = variant_eps_fns(
        cond_fn, uncond_fn, schedule, steps, gamma, weak_fn=weak_fn, names=names
    )
    runs = {
        name: ddim_sample(v.eps_fn, noise, schedule, steps, progress=False)
        for name, v in variants.items()
    }
    nfe = {name: v.nfe for name, v in variants.items()}
    gen = torch.Generator(noise.device).manual_seed(seed)
    cfg = classifier_free_eps_fn(cond_fn, uncond_fn, gamma)
    runs["DDPM"] = ddpm_sample(cfg, noise, schedule, generator=gen, progress=False)
    n = noise.shape[0]
    runs["exact tilted"] = sample_tilted_rejection(mixture, y, gamma, n, gen.manual_seed(seed + 1))
    nfe |= {"DDPM": schedule.T * (1 if gamma in (0, 1) else 2), "exact tilted": 0}
    laws = {"tilted": tilted_draw(mixture, y, gamma)}
    rows = sample_set_metrics(runs, mixture, y, reference, laws, seed=seed + 2)
    return {name: row | {"NFE": nfe[name]} for name, row in rows.items()}


def scale_schedules(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: int,
    gammas: Sequence[float],
    noise: torch.Tensor,
    steps: int,
    reference: torch.Tensor,
    seed: int = 4,
) -> Dict[Tuple[str, float], Dict[str, float]]:
    """Chapter 8's guidance schedules on a 2-D mixture with exact scores: for each gamma of
    ``gammas``, eq. 170 with the constant scale gamma and with
    :func:`~diffcourse.guidance.ramped_gamma`'s rising and falling scales of the same mean, each a
    DDIM run (eta = 0) on ``steps`` levels from ``noise``. ``{(name, gamma): row}`` for name in
    ("constant", "rising", "falling"), each row :func:`~diffcourse.metrics.sample_set_metrics`'
    agreement, spread over ``reference``'s (exact draws of p(x|y)), and the distances over their
    noise floors to the tilted law of that gamma (``"tilted"``) and to p(x|y) (``"pxy"``), with
    ``seed`` for the exact draws and projections; and the samples' mean position along the class
    mean's direction (``"along"``, :func:`~diffcourse.metrics.mean_along`; compare
    :func:`~diffcourse.metrics.tilted_mean_along`)."""
    from .guidance import per_level_cfg_eps_fn, ramped_gamma
    from .metrics import mixture_draw, sample_set_metrics, tilted_draw

    check_tensor(noise, "noise", floating=True, ndim=2)
    gammas = check_reals(gammas, "gammas", low=1)
    seed = check_int(seed, "seed", low=0)
    y = _class(mixture, y)
    cond_fn, uncond_fn = exact_eps_fn(mixture, schedule, y), exact_eps_fn(mixture, schedule)
    unit = mixture.means[y] / mixture.means[y].norm()
    p_y = mixture_draw(mixture, y)
    out = {}
    for gamma in gammas:
        scales = {"constant": lambda step, g=gamma: g}
        scales["rising"] = ramped_gamma(gamma, schedule.T)
        scales["falling"] = ramped_gamma(gamma, schedule.T, rising=False)
        runs = {
            name: ddim_sample(
                per_level_cfg_eps_fn(cond_fn, uncond_fn, at), noise, schedule, steps, progress=False
            )
            for name, at in scales.items()
        }
        laws = {"tilted": tilted_draw(mixture, y, gamma), "pxy": p_y}
        rows = sample_set_metrics(runs, mixture, y, reference, laws, seed=seed)
        for name, x in runs.items():  # how far out along the class's direction they land
            rows[name]["along"] = mean_along(x, unit)
        out |= {(name, gamma): row for name, row in rows.items()}
    return out


# ---- chapter 6: what guidance samples, computed with exact scores -----------------------------------


def _slope_variance(cls: GaussianMixture, data: GaussianMixture, gamma: float) -> float:
    """The variance of the 1-D Gaussian whose score is eq. 170 of the scores of ``cls`` and ``data``:
    an affine score has slope -1 / V, and two evaluations give the slope."""
    x = torch.tensor([[-1.0], [1.0]], dtype=torch.float64)
    f = classifier_free_guidance(cls.score(x), data.score(x), gamma)
    return (2 / (f[0] - f[1])).item()


def tilt_and_noise_variances(
    cls_var: float, data_var: float, gamma: float, mean: float, alpha_bars: Sequence[float]
) -> torch.Tensor:
    """Chapter 6's hand calculation with two 1-D Gaussians, p(x|y) = N(mean, cls_var) and
    p(x) = N(0, data_var), done by the package: [2, len(alpha_bars)] float64 variances, row 0 the
    tilted law (eq. 170 on the clean scores) then noised to alpha_bar (``diffuse``), row 1 the law
    whose score is eq. 170 of the two noised laws (what guided sampling follows). They differ: noise
    and tilting do not commute."""
    gamma = check_real(gamma, "gamma", low=0)
    check_reals(alpha_bars, "alpha_bars")  # at least one level: the largest gap of none fails
    cls, data = gaussian(mean, cls_var), gaussian(0.0, data_var)
    tilted = _slope_variance(cls, data, gamma)  # the clean tilted law's variance

    def both(ab) -> Tuple[float, float]:
        tilt_noise = gaussian(0.0, tilted).diffuse(ab).covs.item()
        return tilt_noise, _slope_variance(cls.diffuse(ab), data.diffuse(ab), gamma)

    return torch.tensor([both(ab) for ab in alpha_bars], dtype=torch.float64).T


def tilt_and_noise_formula_error(
    cls_var: float, data_var: float, gamma: float, mean: float, alpha_bars: Sequence[float]
) -> float:
    """Chapter 6's check of :func:`tilt_and_noise_variances` against the chapter's two closed forms:
    tilt then noise, a / (gamma / cls_var + (1 - gamma) / data_var) + 1 - a, and noise then tilt
    (eq. 170 of the noised laws), 1 / (gamma / (a cls_var + 1 - a) + (1 - gamma) / (a data_var +
    1 - a)), with a = alpha_bar. Returns the largest absolute difference over ``alpha_bars``."""
    cls_var = check_real(cls_var, "cls_var", low=0, low_open=True)
    data_var = check_real(data_var, "data_var", low=0, low_open=True)
    curves = tilt_and_noise_variances(cls_var, data_var, gamma, mean, alpha_bars)
    a, g = torch.as_tensor(alpha_bars, dtype=torch.float64), float(gamma)
    ttn = a / (g / cls_var + (1 - g) / data_var) + 1 - a
    ntt = 1 / (g / (a * cls_var + 1 - a) + (1 - g) / (a * data_var + 1 - a))
    return (curves - torch.stack([ttn, ntt])).abs().max().item()


def cfg_score_gap(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: int,
    gammas: Sequence[float],
    steps: Sequence[int] = (10, 60, 110, 160),
    n: int = 500,
    seed: int = 0,
) -> float:
    """The largest relative difference, over ``steps``, ``gammas`` and n points x_t from the forward
    process (one generator seeded with ``seed``), between eq. 170 with exact scores turned into a
    score, -eps / sigma_t, and the autograd gradient of log q_{t,gamma} = gamma log p_t(x|y) +
    (1 - gamma) log p_t(x) (``tilted_log_prob`` of the noised mixture), in float64: two independent
    routes to one score (chapter 6). Per step and gamma: max |difference| / max |autograd score|."""
    n, seed = check_int(n, "n", low=1), check_int(seed, "seed")
    steps, m64 = check_levels(schedule, steps), check_mixture(mixture).to(dtype=torch.float64)
    gammas = check_reals(gammas, "gammas", low=0)  # none: nothing compared, a gap of 0
    a = schedule.alpha_bar.double()
    gen = torch.Generator(device=mixture.device).manual_seed(seed)
    worst = 0.0
    for step in steps:
        a_t, t = float(a[step]), torch.full((n,), step, device=mixture.device)
        x0 = m64.sample(n, generator=gen)[0]
        x_t = q_sample(x0, t, schedule, generator=gen).requires_grad_(True)
        for gamma in gammas:
            log_q = tilted_log_prob(m64.diffuse(a_t), x_t, y, gamma)
            (score,) = torch.autograd.grad(log_q.sum(), x_t)
            with torch.no_grad():
                eps = exact_cfg_eps_fn(m64, schedule, y, gamma)(x_t, t)
            err = (-eps / (1 - a_t) ** 0.5 - score).norm(dim=1).max()
            worst = max(worst, (err / score.norm(dim=1).max()).item())
    return worst


def langevin_settled(
    c: float,
    alpha: float,
    snr: float,
    n: int = 200_000,
    steps: int = 40,
    dim: int = 2,
    seed: int = 6,
    device=None,
) -> float:
    """Where the corrector's Langevin steps (``samplers.langevin_step``, step size
    2 alpha (snr |z| / |score|)^2) settle on q = N(0, c I) with its exact score -x / c: the variance
    of n float64 points after ``steps`` steps from N(0, I), as a multiple of c (one generator seeded
    with ``seed`` draws everything). Chapter 6 predicts 1 + alpha snr^2, whatever c."""
    c = check_real(c, "c", low=0, low_open=True)
    n, steps, dim = (
        check_int(n, "n", low=2),
        check_int(steps, "steps", low=0),
        check_int(dim, "dim", low=1),
    )
    gen = torch.Generator(check_device(device) or "cpu").manual_seed(check_int(seed, "seed"))
    x = torch.randn(n, dim, generator=gen, device=gen.device, dtype=torch.float64)
    for _ in progress_bar(range(steps), desc="Langevin", leave=False, disable=steps < 100):
        z = torch.randn(x.shape, generator=gen, device=gen.device, dtype=torch.float64)
        x = langevin_step(x, -x / c, alpha, snr, z)
    return x.var(0).mean().item() / c


def pc_gaussian_ratio(
    schedule: Schedule,
    var: float,
    corrector_steps: int,
    snr: float,
    n: int = 20_000,
    dim: int = 2,
    seed: int = 9,
    device=None,
) -> float:
    """The predictor-corrector sampler (``samplers.pc_sample``) run on the Gaussian data law
    N(0, var I) with its exact scores, from n float64 starting points (one generator seeded with
    ``seed`` draws them and every step's noise): the samples' variance as a multiple of var. Its
    last corrector steps run at t = 1, so chapter 6 predicts about 1 + alpha_1 snr^2."""
    n, dim = check_int(n, "n", low=2), check_int(dim, "dim", low=1)
    gen = torch.Generator(check_device(device) or "cpu").manual_seed(check_int(seed, "seed"))
    x_T = torch.randn(n, dim, generator=gen, device=gen.device, dtype=torch.float64)
    eps_fn = exact_eps_fn(gaussian(0.0, var, dim).to(gen.device), schedule)
    x = pc_sample(eps_fn, x_T, schedule, corrector_steps, snr, gen, progress=False)
    return x.var(0).mean().item() / var
