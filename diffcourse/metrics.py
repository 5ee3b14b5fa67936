"""How close is close: sample distances with their noise floor, and score errors over time."""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from . import targets
from .checks import (
    check_callable,
    check_device,
    check_finite,
    check_generator,
    check_int,
    check_ints,
    check_labels,
    check_levels,
    check_mapping,
    check_mixture,
    check_module,
    check_real,
    check_reals,
    check_schedule,
    check_tensor,
)
from .mixture import GaussianMixture, Label, exact_eps_fn, sample_tilted
from .report import progress_bar
from .schedules import Schedule, posterior_variance, q_sample, q_sample_at
from .targets import eps_to_score

Draw = Callable[[int, torch.Generator], torch.Tensor]


def sliced_w2(
    x: torch.Tensor,
    y: torch.Tensor,
    projections: int = 256,
    generator: Optional[torch.Generator] = None,
) -> float:
    """Sliced Wasserstein-2 distance between two equal-size point sets [N, D].

    Each random unit direction turns both sets into 1-D samples, whose W2 is the root-mean-square
    gap between their sorted values; the squared gaps are averaged over directions.
    """
    check_finite(check_tensor(x, "x", floating=True, ndim=2), "x")
    check_finite(check_tensor(y, "y", floating=True, ndim=2), "y")
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must both be [N, D] of one shape, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    projections = check_int(projections, "projections", low=1)
    check_generator(generator)
    if x.shape[0] < 2:
        raise ValueError("x and y need at least 2 points")
    return _sliced_w2(x, y, projections, generator)


def _sliced_w2(x: torch.Tensor, y: torch.Tensor, projections: int, generator) -> float:
    """:func:`sliced_w2` of inputs already checked."""
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    dirs = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    # numpy's sort along contiguous rows is ~10x faster than torch's on a CPU; same sorted values
    px = np.sort((x @ dirs).T.contiguous().numpy(), axis=1)
    py = np.sort((y @ dirs).T.contiguous().numpy(), axis=1)
    return float(np.sqrt(((px - py) ** 2).mean()))


def sample_distance(
    x: torch.Tensor, ref: torch.Tensor, repeats: int = 5, projections: int = 256, seed: int = 0
) -> float:
    """Sliced W2 averaged over ``repeats`` disjoint chunks of ``x`` (equal, or one point apart)
    against those of ``ref``.

    One chunk's figure swings a lot by chance; averaging chunks steadies it.
    """
    check_finite(check_tensor(x, "x", floating=True, ndim=2), "x")
    check_finite(check_tensor(ref, "ref", floating=True, ndim=2), "ref")
    if x.shape != ref.shape:
        raise ValueError(f"x {tuple(x.shape)} and ref {tuple(ref.shape)} must have the same shape")
    repeats, seed = check_int(repeats, "repeats", low=1), check_int(seed, "seed")
    projections = check_int(projections, "projections", low=1)
    if x.shape[0] < 2 * repeats:
        raise ValueError(
            f"repeats must leave at least 2 points per chunk, got {repeats} for {x.shape[0]} points"
        )
    gen = torch.Generator().manual_seed(seed)
    # tensor_split makes exactly `repeats` chunks, sizes within one; chunk() may make fewer
    pairs = zip(x.tensor_split(repeats), ref.tensor_split(repeats))
    return sum(_sliced_w2(a, b, projections, gen) for a, b in pairs) / repeats


def distance_to_exact(
    samples: torch.Tensor, draw: Draw, repeats: int = 5, projections: int = 256, seed: int = 0
) -> Dict[str, float]:
    """The sample distance of ``samples`` to exact draws, next to its noise floor.

    ``draw(n, generator)`` returns n exact draws. The floor is the same figure between two
    independent sets of exact draws of the same size; ``ratio`` = distance / floor, so a perfect
    sampler sits near 1.
    """
    check_tensor(samples, "samples", floating=True, ndim=2)
    return distances_to_exact({"samples": samples}, draw, repeats, projections, seed)["samples"]


def _floor(ref2: torch.Tensor, ref3: torch.Tensor, *args) -> float:
    """The noise floor: the sample distance between two sets of exact draws, never 0."""
    floor = sample_distance(ref2, ref3, *args)
    if floor == 0:  # two identical sets: a constant draw, or one that ignores its generator
        raise ValueError("draw must return random draws: two calls gave the same points (floor 0)")
    return floor


def mixture_draw(mixture: GaussianMixture, y: Label = None) -> Draw:
    """``draw(n, generator)`` for :func:`distance_to_exact`: exact draws from p(x) or p(x|y)."""
    check_mixture(mixture)._check_label(y)
    return lambda n, gen: mixture.sample(n, y, generator=gen)[0]


def tilted_draw(mixture: GaussianMixture, y: int, gamma: float) -> Draw:
    """``draw(n, generator)`` for :func:`distance_to_exact`: draws from the tilted law
    p(x|y)^gamma p(x)^(1 - gamma) / Z of a 2-D mixture (chapter 6; ``mixture.sample_tilted``)."""
    check_mixture(mixture)._check_y(y, 1)
    check_real(gamma, "gamma", low=0)
    return lambda n, gen: sample_tilted(mixture, y, gamma, n, generator=gen)


def _forward_points(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int,
    seed: int,
    y: Label = None,
):
    """The points the relative errors below are measured on, step by step: for each checked step,
    (step, t [n] on the CPU, x_t on the mixture's device, labels), with x_0 and its labels drawn
    from the mixture (class ``y`` only, if given) and x_t from the forward process, all from one
    generator seeded with ``seed``: the same seed, the same points, whatever is measured on them."""
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    gen = torch.Generator().manual_seed(check_int(seed, "seed"))
    for step in steps:
        x0, labels = mixture.sample(n, y, generator=gen)
        t = torch.full((n,), step, dtype=torch.long)
        yield step, t, q_sample(x0.cpu(), t, schedule, generator=gen).to(mixture.device), labels


@torch.no_grad()
def relative_score_error(
    eps_fn,
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 4000,
    y: Label = None,
    seed: int = 0,
) -> torch.Tensor:
    """At each step t: RMS(s_theta - s) / RMS(s) over x_t drawn from the forward process.

    s is the exact score of p_t (``mixture.diffuse(alpha_bar_t).score``), s_theta the score of the
    noise prediction (s = -eps / sqrt(1 - alpha_bar)). A ratio of root-mean-squares, not a mean of
    per-point ratios, which blow up where the exact score is near zero.
    """
    check_callable(eps_fn, "eps_fn")
    out = []
    for step, t, x_t, labels in _forward_points(mixture, schedule, steps, n, seed, y):
        a = float(schedule.alpha_bar[step])
        exact = mixture.diffuse(a).score(x_t, None if y is None else labels)
        probe = x_t.float()
        eps = eps_fn(probe, t.to(probe.device))
        check_tensor(eps, "eps_fn's output", floating=True, shape=tuple(probe.shape))
        learned = eps_to_score(eps, a).to(exact.dtype)
        out.append(((learned - exact).pow(2).mean() / exact.pow(2).mean()).sqrt().item())
    return torch.tensor(out)


def class_agreement(x: torch.Tensor, y: Label, mixture: GaussianMixture) -> float:
    """Share of samples ``x`` asked for label(s) ``y`` that the exact Bayes classifier
    (``argmax_c p(c|x)`` at t = 0) assigns to y. Ceiling: exact draws from p(x|y); floor:
    unconditional draws (about p(y) when y is fixed)."""
    check_tensor(x, "x", floating=True, shape=(None, check_mixture(mixture).dim), nonempty=True)
    check_finite(x, "x")  # argmax of a NaN row is 0: a blown-up sampler would score as class 0
    x = x.to(mixture.device, mixture.dtype)
    y = mixture._check_y(y, x.shape[0])
    return (mixture.class_log_posterior(x).argmax(1) == y).double().mean().item()


def spread(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Diversity: trace of the samples' covariance over that of ``reference`` (exact draws from p(x|y))."""
    check_finite(check_tensor(x, "x", floating=True, ndim=2), "x")
    check_finite(check_tensor(reference, "reference", floating=True, ndim=2), "reference")
    if x.shape[1] != reference.shape[1] or x.shape[0] < 2 or reference.shape[0] < 2:
        raise ValueError("x and reference must be [N, D] with the same D and N >= 2")
    tr = lambda z: torch.cov(z.double().T).trace() if z.shape[1] > 1 else z.double().var()
    return (tr(x.cpu()) / tr(reference.cpu())).item()


# ---- images: fidelity, Fréchet distance, diversity ------------------------------------------------------


def _check_features(a: torch.Tensor, name: str) -> torch.Tensor:
    check_tensor(a, name, floating=True)
    if a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(
            f"{name} must be a [N, F] tensor of features with N >= 2, got {tuple(getattr(a, 'shape', ()))}"
        )
    if not torch.isfinite(a).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return a.detach().double().cpu()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Squared Fréchet distance between Gaussians fitted to two feature sets [N, F] and [M, F]:
    ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)), the formula of FID (Heusel et al. 2017).

    tr (S_a S_b)^(1/2) = sum of the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2), a
    symmetric matrix with the same eigenvalues as S_a S_b: stable, no complex square root needed.
    """
    a, b = _check_features(a, "a"), _check_features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must have the same number of features, got {a.shape[1]} and {b.shape[1]}"
        )
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    w, v = torch.linalg.eigh(cov_a)
    root_a = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).pow(2).sum()
    return (mean_term + cov_a.trace() + cov_b.trace() - 2 * cross).clamp(min=0).item()


@torch.no_grad()
def _check_label_range(y: torch.Tensor, classifier) -> None:
    """Labels within the classifier's classes: a label it cannot predict would count as a miss."""
    if getattr(classifier, "num_classes", None):
        check_labels(y, len(y), classifier.num_classes, allow_int=True)


def fidelity(
    classifier: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
) -> float:
    """Share of images ``x`` that the evaluation classifier assigns to the label ``y`` they were asked
    for. On held-out images with their true labels it is the classifier's accuracy."""
    check_module(classifier, "classifier")
    check_tensor(x, "x", floating=True, nonempty=True)
    check_tensor(y, "y", floating=False, shape=(x.shape[0],))
    check_finite(x, "x")  # argmax of a NaN row is 0: NaN images would read as class 0
    _check_label_range(y, classifier)
    batch_size = check_int(batch_size, "batch_size", low=1)
    pred = torch.cat([classifier(chunk).argmax(1) for chunk in x.split(batch_size)])
    return (pred == y.to(pred.device)).double().mean().item()


def diversity(x: torch.Tensor, y: torch.Tensor, ref_x: torch.Tensor, ref_y: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between images of the same class, averaged over classes,
    over the same figure for reference images (held-out data): 1 is the data's own variety, and
    less means samples of a class look more alike."""

    def within(images: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
        check_finite(check_tensor(images, name, floating=True, nonempty=True), name)
        check_tensor(labels, f"{name}'s labels", floating=False)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{name}'s labels must have shape ({images.shape[0]},)")
        flat, out = images.detach().reshape(images.shape[0], -1).double().cpu(), []
        for c in labels.unique().tolist():
            members = flat[labels.cpu() == c]
            if members.shape[0] >= 2:
                d = torch.cdist(members, members)
                out.append(d.sum() / (members.shape[0] * (members.shape[0] - 1)))
        if not out:
            raise ValueError(f"{name} needs at least two images of some class")
        return torch.stack(out).mean()

    return (within(x, y, "x") / within(ref_x, ref_y, "ref_x")).item()


def out_of_range(x: torch.Tensor, low: float = -1.0, high: float = 1.0) -> float:
    """How far the entries of ``x`` fall outside the data's range [low, high], on average over all
    entries: mean(max(x - high, 0) + max(low - x, 0)); 0 for images inside the range. Read on
    samples before any clamp, it stands in for what Lin et al. (2024) call over-exposure and Sadat
    et al. (2025) built APG to remove, oversaturation: guidance pushing pixels past the values the
    data takes."""
    check_finite(check_tensor(x, "x", floating=True), "x")
    if x.numel() == 0:
        raise ValueError("x must hold at least one entry")
    low = check_real(low, "low")
    high = check_real(high, "high", low=low, low_open=True)
    return ((x - high).clamp(min=0) + (low - x).clamp(min=0)).mean().item()


def _check_judge(judge, name: str = "judge") -> torch.nn.Module:
    """An evaluation classifier: a module with a ``features`` method (its penultimate layer, in
    which Fréchet distances and feature traces are measured)."""
    if not callable(getattr(check_module(judge, name), "features", None)):
        raise TypeError(
            f"{name} must have a features method (an evaluation classifier), got "
            f"{type(judge).__name__}"
        )
    return judge


def _check_judge_and_refs(classifier, ref_x: torch.Tensor, ref_y: torch.Tensor) -> None:
    """An evaluation classifier and held-out images with their labels: checked before any sampling
    or scoring, so a wrong one is named, not met deep inside."""
    _check_judge(classifier, "classifier")
    check_tensor(ref_x, "ref_x", floating=True, nonempty=True)
    check_tensor(ref_y, "ref_y", floating=False, shape=(ref_x.shape[0],))


@torch.no_grad()
def image_metrics(
    classifier: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
) -> Dict[str, float]:
    """Fidelity, Fréchet distance (in the evaluation classifier's features, against ``ref_x``) and
    diversity of samples ``x`` that were asked for labels ``y``; ``ref_x``/``ref_y`` are held-out images."""
    _check_judge_and_refs(classifier, ref_x, ref_y)
    feats = lambda z: torch.cat([classifier.features(chunk) for chunk in z.split(1000)])
    return {
        "fidelity": fidelity(classifier, x, y),
        "frechet": frechet_distance(feats(x), feats(ref_x)),
        "diversity": diversity(x, y, ref_x, ref_y),
    }


def knn_entropy(x: torch.Tensor, k: int = 5) -> float:
    """Differential entropy (nats) of the law behind the samples ``x`` [N, D], by the Kozachenko-
    Leonenko k-nearest-neighbour estimator:
    H = psi(N) - psi(k) + log V_D + (D / N) sum_i log r_i, r_i the distance from x_i to its k-th
    nearest neighbour and V_D the volume of the unit ball in D dimensions. Consistent as N grows; in
    two dimensions a few thousand points give it to a few hundredths of a nat. Diversity as
    Wu et al. (2024) measure it: guidance lowers it."""
    check_tensor(x, "x", ndim=2)  # [N, D]
    if x.shape[0] < 2:
        raise ValueError(f"x must hold at least two points, got {x.shape[0]}")
    k = check_int(k, "k", low=1, high=x.shape[0] - 1)  # the k-th neighbour of each of N points
    x = x.detach().double().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("x holds NaN or infinite values")
    n, d = x.shape
    radii = torch.cat(
        [
            torch.cdist(chunk, x).topk(k + 1, dim=1, largest=False).values[:, k]
            for chunk in x.split(1024)
        ]
    )
    if (radii <= 0).any():
        raise ValueError("x holds repeated points: the estimator needs distinct samples")
    log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    psi = lambda v: torch.special.digamma(torch.tensor(float(v), dtype=torch.float64)).item()
    return psi(n) - psi(k) + log_ball + d * radii.log().mean().item()


# ---- the per-class loops of the 2-D labs, and the Fréchet noise floor ------------------------------


def class_references(mixture: GaussianMixture, n: int, seed: int = 10) -> Dict[int, torch.Tensor]:
    """``{c: n exact draws from p(x|c)}`` for every class, class c drawn with seed ``seed + c`` on
    the mixture's device: the references :func:`spread` compares with."""
    check_mixture(mixture)
    n, seed = check_int(n, "n", low=2), check_int(seed, "seed")
    return {
        c: mixture.sample(
            n, c, generator=torch.Generator(device=mixture.device).manual_seed(seed + c)
        )[0]
        for c in range(mixture.num_classes)
    }


def per_class_agreement_and_spread(
    x: torch.Tensor,
    y: torch.Tensor,
    mixture: GaussianMixture,
    references: Optional[Mapping[int, torch.Tensor]] = None,
) -> Dict[int, Tuple[float, Optional[float]]]:
    """For each class c asked for in ``y``: (class agreement of the samples asked for c, their
    spread against ``references[c]``; None without references). See :func:`class_agreement` and
    :func:`spread`."""
    check_tensor(x, "x", floating=True, shape=(None, check_mixture(mixture).dim), nonempty=True)
    check_tensor(y, "y", floating=False, shape=(x.shape[0],))
    y_host = y.cpu()
    out = {}
    for c in torch.unique(y_host).tolist():
        x_c = x[(y == c)]
        if x_c.shape[0] < 2:
            raise ValueError(
                f"y asks for class {c} only {x_c.shape[0]} time(s): need at least 2 samples per class"
            )
        div = None
        if references is not None:
            missing = (
                c not in references if isinstance(references, Mapping) else c >= len(references)
            )
            if missing:
                raise ValueError(f"references has no entry for class {c}")
            ref = references[c]
            if not isinstance(ref, torch.Tensor):
                raise TypeError(f"references[{c}] must be a torch.Tensor, got {type(ref).__name__}")
            div = spread(x_c, ref)
        out[c] = (class_agreement(x_c, c, mixture), div)
    return out


def agreement_and_spread(
    x: torch.Tensor,
    y: torch.Tensor,
    mixture: GaussianMixture,
    references: Optional[Mapping[int, torch.Tensor]] = None,
) -> Tuple[float, Optional[float]]:
    """Class agreement and spread of samples ``x`` asked for labels ``y``, each averaged over the
    classes asked for (every class weighs the same, whatever its number of samples). The spread is
    None without ``references`` (``{c: exact draws from p(x|c)}``, :func:`class_references`).
    Compare gammas with the same starting noise (as chapter 4's lab does)."""
    rows = per_class_agreement_and_spread(x, y, mixture, references)
    agree = sum(a for a, _ in rows.values()) / len(rows)
    div = None if references is None else sum(d for _, d in rows.values()) / len(rows)
    return agree, div


class FrechetFloor(NamedTuple):
    """The Fréchet noise floor: its mean and standard deviation over draws, and every draw's value."""

    mean: float
    std: float
    values: torch.Tensor


@torch.no_grad()
def frechet_floor(
    judge: torch.nn.Module,
    x_pool: torch.Tensor,
    x_ref: torch.Tensor,
    n: int,
    draws: int = 20,
    seed: int = 100,
    y_pool: Optional[torch.Tensor] = None,
) -> FrechetFloor:
    """The Fréchet distance that sampling noise alone gives: ``n`` real images drawn from ``x_pool``
    against ``x_ref``, in the judge's features, over ``draws`` draws (draw k is seeded with
    ``seed + k``; one draw has std 0). A sample set of n images is as good as real data when its
    distance sits within this floor's spread.

    Without ``y_pool`` each draw takes n rows at random (``randperm(len(x_pool), seed + k)[:n]``),
    so its class shares fluctuate. With ``y_pool`` (the pool's labels) each draw takes ``n // C``
    rows of every class (:func:`diffcourse.data.balanced_rows`; n a multiple of C): compare it with
    samples asked for in equal numbers and a reference with equal class counts, since the distance
    in a classifier's features responds first to class proportions (chapter 7). The pool should be
    images the judge never saw: it maps its own training images more tightly than new ones."""
    from .data import balanced_rows

    _check_judge(judge)
    check_tensor(x_pool, "x_pool", floating=True)
    check_tensor(x_ref, "x_ref", floating=True)
    n = check_int(n, "n", low=2, high=x_pool.shape[0])
    draws, seed = check_int(draws, "draws", low=1), check_int(seed, "seed")
    if y_pool is not None:
        check_tensor(y_pool, "y_pool", floating=False, shape=(x_pool.shape[0],))
        classes = int(y_pool.max()) + 1
        if n % classes:
            raise ValueError(
                f"n must be a multiple of the number of classes in y_pool ({classes}), got {n}"
            )
    ref_features = judge.features(x_ref)
    values = []
    for k in range(draws):
        if y_pool is None:
            rows = torch.randperm(
                x_pool.shape[0], generator=torch.Generator().manual_seed(seed + k)
            )[:n]
        else:
            rows = balanced_rows(y_pool, n // classes, seed + k)
        values.append(
            frechet_distance(judge.features(x_pool[rows.to(x_pool.device)]), ref_features)
        )
    values = torch.tensor(values, dtype=torch.float64)
    return FrechetFloor(values.mean().item(), values.std().item() if draws > 1 else 0.0, values)


@torch.no_grad()
def relative_grad_error(
    grad_for: Callable[[torch.Tensor], Callable],
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 6000,
    seed: int = 0,
) -> torch.Tensor:
    """At each step t: RMS |g - g*| / RMS |g*| over labelled x_t from the forward process, where g* is
    the exact classifier gradient grad log p_t(y | x_t) (Luo eq. 165-167) at the point's own label y,
    taken by autograd of the exact log posterior (so it forms no score, and eq. 167 checked against
    it is not checked against itself), and g the one under test. Chapters 4 and 5's measure of a
    learned classifier's gradient.

    ``grad_for(y)`` returns the gradient under test for labels ``y`` as ``grad_fn(x_t, t)``:
    ``functools.partial(guidance.classifier_grad_fn, classifier)`` for an explicit noise-aware
    classifier, ``lambda y: guidance.implicit_classifier_grad_fn(model.eps_fn(y), model.eps_fn(),
    schedule)`` for the implicit classifier of a classifier-free network. The same ``seed`` gives
    the same x_t, so two classifiers are compared on the same points.
    """
    check_callable(grad_for, "grad_for")
    out = []
    for step, t, x_t, y in _forward_points(mixture, schedule, steps, n, seed):
        m_t = mixture.diffuse(float(schedule.alpha_bar[step]))
        exact = _autograd(_log_posterior_of(m_t, y), x_t)
        probe = x_t.float()
        g = grad_for(y.to(probe.device))(probe, t.to(probe.device)).to(exact.dtype)
        out.append(((g - exact).pow(2).sum(1).mean() / exact.pow(2).sum(1).mean()).sqrt().item())
    return torch.tensor(out)


def distances_to_exact(
    samples: Mapping[str, torch.Tensor],
    draw: Draw,
    repeats: int = 5,
    projections: int = 256,
    seed: int = 0,
) -> Dict[str, Dict[str, float]]:
    """:func:`distance_to_exact` for several sets of samples of one size against the same exact
    draws: ``{name: {"distance", "floor", "ratio"}}``, each entry equal to
    ``distance_to_exact(samples[name], draw, repeats, projections, seed)``, with the exact draws and
    the floor computed once instead of once per set (several samplers against one target law)."""
    check_mapping(samples, "samples", "mapping name -> tensor", "sample set")
    for name, x in samples.items():
        check_tensor(x, f"samples[{name!r}]", floating=True, ndim=2)
    check_callable(draw, "draw")
    first = next(iter(samples.values()))
    if any(x.shape != first.shape or x.dtype != first.dtype for x in samples.values()):
        raise ValueError("samples: every set must have the same shape and dtype")
    n = first.shape[0]
    gen = torch.Generator().manual_seed(check_int(seed, "seed"))
    ref, ref2, ref3 = (draw(n, gen).to(first.dtype).cpu() for _ in range(3))
    floor = _floor(ref2, ref3, repeats, projections, seed)
    out = {}
    for name, x in samples.items():
        distance = sample_distance(x.cpu(), ref, repeats, projections, seed)
        out[name] = {"distance": distance, "floor": floor, "ratio": distance / floor}
    return out


@torch.no_grad()
def relative_eps_error(
    eps_for: Callable[[torch.Tensor], Callable],
    reference_for: Callable[[torch.Tensor], Callable],
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 3000,
    seed: int = 0,
) -> torch.Tensor:
    """At each step t: RMS(eps - eps_ref) / RMS(eps_ref) over labelled x_t from the forward process,
    where ``eps_for(y)`` and ``reference_for(y)`` return noise predictors ``eps_fn(x_t, t)`` for the
    points' own labels y (a network's branch, a guided predictor, and the exact one for the same
    labels). Both convert to scores by the same factor -1/sqrt(1 - alpha_bar_t), so this is also the
    relative error of their scores. The same ``seed`` gives the same points."""
    check_callable(eps_for, "eps_for")
    check_callable(reference_for, "reference_for")
    out = []
    for _, t, x_t, y in _forward_points(mixture, schedule, steps, n, seed):
        x_t = x_t.float()
        t, y = t.to(x_t.device), y.to(x_t.device)
        ref = reference_for(y)(x_t, t)
        err = eps_for(y)(x_t, t).to(ref.dtype) - ref
        out.append((err.pow(2).mean() / ref.pow(2).mean()).sqrt().item())
    return torch.tensor(out)


class SeededImageMetrics(NamedTuple):
    """What :func:`image_metrics_over_seeds` returns: one :func:`image_metrics` dict per seed, and
    each seed's :func:`out_of_range` of the images before they were clamped."""

    runs: Tuple[Dict[str, float], ...]
    out_of_range: Tuple[float, ...] = ()

    def values(self, key: str) -> torch.Tensor:
        """The metric ``key`` ("fidelity", "frechet" or "diversity") of every seed, in seed order."""
        return torch.tensor([run[key] for run in self.runs], dtype=torch.float64)

    def mean(self, key: str) -> float:
        return self.values(key).mean().item()

    def std(self, key: str) -> float:
        """The standard deviation over seeds (0 for one seed)."""
        v = self.values(key)
        return v.std().item() if len(v) > 1 else 0.0

    def means(self) -> Dict[str, float]:
        return {key: self.mean(key) for key in self.runs[0]}

    def mean_std(self, keys: Optional[Sequence[str]] = None) -> list:
        """``[(mean, std), ...]`` over seeds for each metric of ``keys`` (default: all, in order),
        the pairs a :func:`~diffcourse.report.table` cell prints as "mean ± std"."""
        keys = list(self.runs[0]) if keys is None else list(keys)
        for key in keys:
            if key not in self.runs[0]:
                raise ValueError(f"keys: no metric {key!r}; there are {list(self.runs[0])}")
        return [(self.mean(key), self.std(key)) for key in keys]


def image_metrics_over_seeds(
    classifier: torch.nn.Module,
    sample: Callable,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    seeds: int = 1,
    shape: Sequence[int] = (1, 8, 8),
) -> SeededImageMetrics:
    """:func:`image_metrics` of a sampler's images over ``seeds`` starting noises, paired across methods.

    For seed k the starting noise is ``samplers.seeded_noise((len(y), *shape), k)`` on ``y``'s
    device and the sampler's own generator is seeded with ``1000 + k``: ``sample(noise, generator)``
    returns the images, which are clamped to [-1, 1] (the data's range) before they are judged; how
    far they strayed outside it is kept apart (``out_of_range``). Two methods measured with the same
    ``seeds`` start from the same noise, so their difference is the method's, not luck's."""
    from .samplers import seeded_noise

    check_callable(sample, "sample")
    check_tensor(y, "y", floating=False, ndim=1)
    _check_judge_and_refs(classifier, ref_x, ref_y)
    seeds = check_int(seeds, "seeds", low=1)
    shape = check_ints(shape, "shape", low=1)
    runs, outside = [], []
    for k in range(seeds):
        noise = seeded_noise((y.shape[0], *shape), k, y.device)
        generator = torch.Generator(y.device).manual_seed(1000 + k)
        x = sample(noise, generator)
        check_tensor(x, "sample's images", floating=True, shape=(y.shape[0], *shape))
        outside.append(out_of_range(x))
        runs.append(image_metrics(classifier, x.clamp(-1, 1), y, ref_x, ref_y))
    return SeededImageMetrics(tuple(runs), tuple(outside))


def distance_to_exact_fn(
    draw: Draw,
    n: int,
    repeats: int = 5,
    projections: int = 256,
    seed: int = 0,
) -> Callable[[torch.Tensor], Dict[str, float]]:
    """:func:`distance_to_exact` for many sample sets of ``n`` points held against one law: its three
    exact draws and its noise floor are made once, here, so each call of the returned function costs
    one sample distance. The numbers are ``distance_to_exact(samples, draw, repeats, projections, seed)``'s
    for samples of the dtype of the draws."""
    check_callable(draw, "draw")
    n = check_int(n, "n", low=2)
    gen = torch.Generator().manual_seed(check_int(seed, "seed"))
    ref, ref2, ref3 = (draw(n, gen).cpu() for _ in range(3))
    floor = _floor(ref2, ref3, repeats, projections, seed)

    def distance(samples: torch.Tensor) -> Dict[str, float]:
        check_tensor(samples, "samples", floating=True, shape=(n, ref.shape[1]))
        d = sample_distance(samples.cpu(), ref.to(samples.dtype), repeats, projections, seed)
        return {"distance": d, "floor": floor, "ratio": d / floor}

    return distance


# ---- chapter 1: Tweedie's formula by brute force, one chunk's noise floor ------------------------


@torch.no_grad()
def tweedie_errors(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    pool_size: int = 40000,
    n: int = 128,
    generator: Optional[torch.Generator] = None,
) -> Dict[int, Dict[str, float]]:
    """``{step: {conversion: relative error}}``: a pool of ``pool_size`` data draws x0_j, then at
    each step n points x_t from the forward process (x_0 from the mixture, then x_t), all from
    ``generator`` in that order; each of the six conversions among x0, noise and score of
    :mod:`diffcourse.targets` fed with the exact score of p_t or with the brute-force averages over
    the pool (:func:`~diffcourse.targets.posterior_means`) is held against the brute-force answer
    (or the exact score): |u - v| / |v| over all n points. Checks Tweedie's formula (Luo eq. 133) and
    eq. 151 with no network; what is left is the Monte Carlo error of the pool."""
    check_mixture(mixture)
    steps = check_levels(schedule, steps)
    pool_size = check_int(pool_size, "pool_size", low=1)
    n = check_int(n, "n", low=1)
    check_generator(generator)
    pool, _ = mixture.sample(pool_size, generator=generator)
    out = {}
    for step in steps:
        a = float(schedule.alpha_bar[step])
        x0, _ = mixture.sample(n, generator=generator)
        t = torch.full((n,), step, device=x0.device)
        x_t = q_sample(x0, t, schedule, generator=generator)
        x0_mean, eps_mean = targets.posterior_means(x_t, pool, a)
        score = mixture.diffuse(a).score(x_t)  # the exact score of p_t
        pairs = {
            "score_to_eps": (targets.score_to_eps(score, a), eps_mean),
            "eps_to_score": (targets.eps_to_score(eps_mean, a), score),
            "score_to_x0": (targets.score_to_x0(x_t, score, a), x0_mean),
            "x0_to_score": (targets.x0_to_score(x_t, x0_mean, a), score),
            "eps_to_x0": (targets.eps_to_x0(x_t, eps_mean, a), x0_mean),
            "x0_to_eps": (targets.x0_to_eps(x_t, x0_mean, a), eps_mean),
        }
        out[step] = {k: ((u - v).norm() / v.norm()).item() for k, (u, v) in pairs.items()}
    return out


def chunk_floors(
    draw: Draw,
    n: int,
    seeds: int = 10,
    seed: int = 100,
    projections: int = 256,
    device=None,
) -> list:
    """One chunk's noise floor, seed by seed: :func:`sliced_w2` between two independent sets of n
    exact draws, for k = 0 .. seeds - 1 (both sets from a generator on ``device`` seeded
    ``seed + k``, the directions from a CPU generator seeded k). Their spread is how much a sample
    distance on one chunk moves by chance alone (chapter 1), which is why
    :func:`distance_to_exact` averages chunks."""
    check_callable(draw, "draw")
    n, seeds = check_int(n, "n", low=2), check_int(seeds, "seeds", low=1)
    seed = check_int(seed, "seed")
    g, directions = torch.Generator(check_device(device) or "cpu"), torch.Generator()
    out = []
    for k in range(seeds):
        g.manual_seed(seed + k)
        directions.manual_seed(k)
        out.append(sliced_w2(draw(n, g), draw(n, g), projections, directions))
    return out


# ---- chapter 2: the class agreement class by class, and what the label is worth to the loss -------


def per_class_agreement(
    x: torch.Tensor, y: torch.Tensor, mixture: GaussianMixture
) -> Dict[int, float]:
    """``{c: class agreement of the samples asked for c}`` for each class c in ``y``: the agreements
    of :func:`per_class_agreement_and_spread`, without the spread."""
    return {c: a for c, (a, _) in per_class_agreement_and_spread(x, y, mixture).items()}


class LabelGain(NamedTuple):
    """What :func:`label_gain` returns: point by point at each step ([steps, n]) the gain by the
    formula and the difference of the two losses; per step ([steps], float32) the two minimal
    losses, summed over coordinates."""

    formula: torch.Tensor
    direct: torch.Tensor
    loss_u: torch.Tensor
    loss_c: torch.Tensor


@torch.no_grad()
def label_gain(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 2000,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
) -> LabelGain:
    """What knowing the label is worth to the noise-prediction loss, two ways on the same points.

    At each step, n labelled x_0 from the mixture and fresh noise eps (both from ``generator``),
    x_t from the forward process. ``direct``: |eps - E[eps|x_t]|^2 - |eps - E[eps|x_t, y]|^2 with
    the two exact noise predictors (:func:`~diffcourse.mixture.exact_eps_fn` without and with y);
    their means are the minimal losses ``loss_u`` and ``loss_c`` (without and with y). ``formula``:
    the gain G_t = (1 - alpha_bar_t) |grad log p_t(y | x_t)|^2 that chapter 2 derives from the
    eps-score link (Luo eq. 151) and Bayes' rule for scores (Luo eq. 165). The two share only the
    exact scores (``classifier_grad`` is built from the same responsibilities), so their agreement
    tests the derivation's expectation steps."""
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    check_generator(generator)
    exact_u = exact_eps_fn(mixture, schedule)
    formula, direct, loss_u, loss_c = [], [], [], []
    for step in progress_bar(steps, desc="label gain", progress=progress, leave=False):
        a = float(schedule.alpha_bar[step])
        x0, y0 = mixture.sample(n, generator=generator)
        eps = torch.randn(x0.shape, generator=generator, device=x0.device)
        t = torch.full((n,), step, device=x0.device)
        x_t = q_sample(x0, t, schedule, eps=eps)
        err_u = (eps - exact_u(x_t, t)).pow(2).sum(1)
        err_c = (eps - exact_eps_fn(mixture, schedule, y0)(x_t, t)).pow(2).sum(1)
        grad = mixture.diffuse(a).classifier_grad(x_t, y0)
        formula.append((1 - a) * grad.pow(2).sum(1))
        direct.append(err_u - err_c)
        loss_u.append(err_u.mean().item())
        loss_c.append(err_c.mean().item())
    return LabelGain(
        torch.stack(formula), torch.stack(direct), torch.tensor(loss_u), torch.tensor(loss_c)
    )


# ---- several methods side by side (chapter 8's tables) ------------------------------------------


def sample_set_metrics(
    samples: Mapping[str, torch.Tensor],
    mixture: GaussianMixture,
    y: int,
    reference: torch.Tensor,
    laws: Mapping[str, Draw],
    seed: int = 0,
) -> Dict[str, Dict[str, float]]:
    """For each named set of 2-D samples asked for class ``y`` of ``mixture``:
    ``{"agreement": class_agreement, "spread": spread over reference's, law: ratio, ...}``, where
    for each entry of ``laws`` (name -> exact ``draw``, e.g. :func:`tilted_draw`) the ratio is
    :func:`distance_to_exact`'s, the sample distance to exact draws over its noise floor. The
    numbers are those functions' own (``distance_to_exact(x, draw, seed=seed)["ratio"]``); sets of
    one shape and dtype share the exact draws (:func:`distances_to_exact`)."""
    check_mapping(samples, "samples", "mapping name -> tensor", "sample set")
    if not isinstance(laws, Mapping):
        raise TypeError(f"laws must be a mapping name -> draw, got {type(laws).__name__}")
    for name, x in samples.items():
        check_tensor(x, f"samples[{name!r}]", floating=True, ndim=2)
    check_tensor(reference, "reference", floating=True, ndim=2)
    groups: Dict[tuple, Dict[str, torch.Tensor]] = {}
    for name, x in samples.items():  # distances_to_exact wants one shape and dtype
        groups.setdefault((tuple(x.shape), x.dtype), {})[name] = x
    ratios = {law: {} for law in laws}
    for law, draw in laws.items():
        for group in groups.values():
            for name, d in distances_to_exact(group, draw, seed=seed).items():
                ratios[law][name] = d["ratio"]
    out = {}
    for name, x in samples.items():
        out[name] = {
            "agreement": class_agreement(x, y, mixture),
            "spread": spread(x, reference),
        }
        out[name] |= {law: ratios[law][name] for law in laws}
    return out


def ddim_image_metrics(
    classifier: torch.nn.Module,
    eps_fns: Mapping[str, Callable],
    schedule: Schedule,
    steps: int,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    seeds: int = 1,
    shape: Sequence[int] = (1, 8, 8),
) -> Dict[str, Dict[str, float]]:
    """:func:`image_metrics_over_seeds` of several samplers' images, each a DDIM run (eta = 0, Song
    et al. 2021 eq. 12) on ``steps`` levels of ``schedule`` with one ``eps_fn`` of ``eps_fns``
    (name -> eps_fn): ``{name: {"fidelity", "frechet", "diversity", "out_of_range"}}``, each
    averaged over ``seeds`` starting noises shared by all the methods; "out_of_range" is
    :func:`out_of_range` of the images before they are clamped to the data's range for judging.
    An entry that is a :class:`~diffcourse.guidance.Variant` (eps_fn, nfe) adds its "NFE" to its
    row."""
    from .samplers import ddim_sample

    check_mapping(eps_fns, "eps_fns", "mapping name -> eps_fn", "eps_fn")
    nfe = {name: fn.nfe for name, fn in eps_fns.items() if hasattr(fn, "nfe")}
    eps_fns = {name: getattr(fn, "eps_fn", fn) for name, fn in eps_fns.items()}
    for name, fn in eps_fns.items():
        check_callable(fn, f"eps_fns[{name!r}]")
    check_schedule(schedule)
    steps = check_int(steps, "steps", low=1, high=schedule.T)
    out = {}
    for name, fn in progress_bar(eps_fns.items(), desc="methods", leave=False):

        def sample(z: torch.Tensor, g: torch.Generator, fn=fn) -> torch.Tensor:
            return ddim_sample(fn, z, schedule, steps, progress=False)

        runs = image_metrics_over_seeds(classifier, sample, y, ref_x, ref_y, seeds, shape)
        outside = runs.out_of_range  # read before the images were clamped for judging
        out[name] = runs.means() | {"out_of_range": sum(outside) / len(outside)}
        out[name] |= {"NFE": nfe[name]} if name in nfe else {}
    return out


@torch.no_grad()
def rescale_factors(
    cond_fn: Callable,
    uncond_fn: Callable,
    x0: torch.Tensor,
    schedule: Schedule,
    levels: Sequence[int],
    gamma: float,
    target: str = "eps",
) -> Dict[int, float]:
    """Rescaled CFG's factor std(eps_c) / std(eps_cfg) (Lin et al. 2024, Algorithm 2; eps_cfg is
    Luo eq. 170 at ``gamma``) at each level of ``levels``, averaged over the rows of ``x0`` noised
    to that level (:func:`~diffcourse.schedules.q_sample_at`, seeded by the level): each row's
    standard deviation over its entries. ``{level: factor}``; a factor near 1 means rescaling
    changes little there. ``target="v"`` takes the spreads of the v-predictions instead
    (:func:`~diffcourse.targets.eps_to_v`), the factor of
    :func:`~diffcourse.guidance.rescaled_cfg_v_eps_fn`."""
    if target not in ("eps", "v"):
        raise ValueError(f"target must be 'eps' or 'v', got {target!r}")
    check_callable(cond_fn, "cond_fn")
    check_callable(uncond_fn, "uncond_fn")
    check_tensor(x0, "x0", floating=True)
    if x0.ndim < 2 or x0[0].numel() < 2:
        raise ValueError(
            f"x0 must be [N, ...] with at least 2 entries per row, got {tuple(x0.shape)}"
        )
    gamma, levels = check_real(gamma, "gamma", low=0), check_levels(schedule, levels, "levels")
    out = {}
    for step in levels:
        x_t, t = q_sample_at(x0, step, schedule)
        c, u = cond_fn(x_t, t), uncond_fn(x_t, t)
        if target == "v":
            a = schedule.alpha_bar[step].item()
            c, u = targets.eps_to_v(x_t, c, a), targets.eps_to_v(x_t, u, a)
        guided = gamma * c + (1 - gamma) * u
        out[step] = (c.flatten(1).std(1) / guided.flatten(1).std(1)).mean().item()
    return out


# ---- chapters 3 and 4: Bayes' rule for scores on exact mixtures, and noisy classifiers -------------
# Each function loops over noise levels, drawing its points from ``generator`` in a fixed order, so
# one generator passed through several calls gives the same points as the labs' loops did.


def _labelled_x_t(mixture: GaussianMixture, schedule: Schedule, step: int, n: int, generator):
    """n labelled x_t from the forward process at ``step`` (x_0 and y from the mixture, then the
    noise, both from ``generator``), the steps t, and the mixture of x_t."""
    x0, y = mixture.sample(n, generator=generator)
    t = torch.full((n,), step, device=mixture.device)
    x_t = q_sample(x0, t, schedule, generator=generator)
    return x_t, t, y, mixture.diffuse(float(schedule.alpha_bar[step]))


def _autograd(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The gradient of f(x), summed over the batch, by automatic differentiation."""
    with torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        return torch.autograd.grad(f(x).sum(), x)[0]


def _max_rel(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    """The largest |a - b| over the largest |scale|: one figure for an identity a = b."""
    return ((a - b).abs().max() / scale.abs().max()).item()


def _log_posterior_of(m_t: GaussianMixture, y: torch.Tensor):
    """x -> log p_t(y | x) of the labels y, for autograd."""
    return lambda x: m_t.class_log_posterior(x).gather(1, y[:, None])


def bayes_log_form_errors(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 4000,
    generator: Optional[torch.Generator] = None,
) -> Dict[int, Tuple[float, float, bool]]:
    """Bayes' rule in log form and its gradient, checked on n labelled x_t at each step:
    ``{step: (log-form error, eq. 164 error, p(y) kept)}``.

    The log form, eq. 163 (Luo 2022) before its gradient is taken:
    log p_t(x|y) = log p_t(x) + log p_t(y|x) - log p(y), each term a method of
    the noisy mixture; its error is the largest gap over the largest |log p_t(x|y)|. Eq. 164: the
    gradient of the same, with grad log p(y) = 0; the three gradients are taken by autograd of the
    log-densities, and the error is relative to the largest conditional score. The last entry says
    whether ``diffuse`` kept the class shares p(y) exactly. Use a float64 mixture: in float64 both
    errors are rounding, about 1e-15."""
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    check_generator(generator)
    out = {}
    for step in steps:
        x_t, _, y, m_t = _labelled_x_t(mixture, schedule, step, n, generator)
        log_py = m_t.class_weights.log()[y]
        lhs = m_t.log_prob(x_t, y)
        post = m_t.class_log_posterior(x_t).gather(1, y[:, None])[:, 0]
        log_form = _max_rel(m_t.log_prob(x_t) + post - log_py, lhs, lhs)
        g_cond = _autograd(partial(m_t.log_prob, y=y), x_t)
        g_uncond = _autograd(m_t.log_prob, x_t)
        g_post = _autograd(_log_posterior_of(m_t, y), x_t)
        eq164 = _max_rel(g_uncond + g_post, g_cond, g_cond)
        same_py = (m_t.class_weights == mixture.class_weights).all().item()
        out[step] = (log_form, eq164, same_py)
    return out


def bayes_score_errors(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 4000,
    generator: Optional[torch.Generator] = None,
) -> Dict[int, Tuple[float, float]]:
    """Bayes' rule for scores (Luo 2022 eq. 165), checked on n labelled x_t at each step:
    ``{step: (eq. 165 error, classifier_grad error)}``.

    The classifier gradient grad log p_t(y|x) is taken by autograd of the exact log posterior (which
    never forms a score), so eq. 165, score(x, y) = score(x) + grad log p_t(y|x), is not checked
    against itself. The right side is held against the closed-form conditional score and against
    autograd of log p_t(x|y) (the distance-based log-density): with one covariance for every
    component the two closed-form scores share their -Sigma^-1 x term, which cancels in their
    difference, so only the second comparison sees an error there. The first figure is the larger
    gap; the second holds ``classifier_grad`` (eq. 165 read backwards) against the same autograd
    gradient. Both are the largest gap over the largest conditional score."""
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    check_generator(generator)
    out = {}
    for step in steps:
        x_t, _, y, m_t = _labelled_x_t(mixture, schedule, step, n, generator)
        by_autograd = _autograd(_log_posterior_of(m_t, y), x_t)
        lhs, rhs = m_t.score(x_t, y), m_t.score(x_t) + by_autograd
        by_density = _autograd(partial(m_t.log_prob, y=y), x_t)
        eq165 = max(_max_rel(rhs, lhs, lhs), _max_rel(rhs, by_density, lhs))
        backwards = _max_rel(m_t.classifier_grad(x_t, y), by_autograd, lhs)
        out[step] = (eq165, backwards)
    return out


def mean_class_posterior(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 20000,
    generator: Optional[torch.Generator] = None,
) -> Dict[int, Tuple[torch.Tensor, torch.Tensor]]:
    """The mean of p_t(y | x_t) over n draws x_t ~ p_t, and its standard error, for every class:
    ``{step: (mean [C], standard error [C])}``. Averaging Bayes' rule over x_t gives
    E[p_t(y | x_t)] = p(y) at every t (the integral over x_t of p_t(x_t) p_t(y | x_t) is p_t(y), and
    noising never changes the class shares), so the means must sit within a few standard errors
    of the class shares."""
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=2)
    check_generator(generator)
    out = {}
    for step in steps:
        m_t = mixture.diffuse(float(schedule.alpha_bar[step]))
        x_t, _ = m_t.sample(n, generator=generator)
        post = m_t.class_log_posterior(x_t).exp()
        out[step] = (post.mean(0), post.std(0) / n**0.5)
    return out


def class_signal(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 2000,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """How much the noisy point still says about its class, at each step: (mean norm of the exact
    classifier gradient |grad log p_t(y | x_t)| (Luo 2022 eq. 165), accuracy of the exact Bayes
    classifier argmax_c p_t(c | x_t)), each over n draws from p_t(x | y) per class y and averaged
    over the classes. Both as float32 tensors [len(steps)]."""
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    check_generator(generator)
    norms, accuracy = [], []
    for step in progress_bar(steps, desc="class signal", progress=progress, leave=False):
        m_t = mixture.diffuse(float(schedule.alpha_bar[step]))
        n_c, a_c = [], []
        for c in range(mixture.num_classes):
            x_t, _ = m_t.sample(n, c, generator=generator)
            n_c.append(m_t.classifier_grad(x_t, c).norm(dim=1).mean())
            guess = m_t.class_log_posterior(x_t).argmax(1)
            a_c.append((guess == c).double().mean())
        norms.append(torch.stack(n_c).mean().item())
        accuracy.append(torch.stack(a_c).mean().item())
    return torch.tensor(norms), torch.tensor(accuracy)


class NoisyClassifierCheck(NamedTuple):
    """What :func:`noisy_classifier_check` returns, each a float32 tensor with one entry per step."""

    accuracy: torch.Tensor  # of the learned classifier
    bayes_accuracy: torch.Tensor  # of the exact Bayes classifier
    grad_rms: torch.Tensor  # RMS norm of the exact gradient
    error_rms: torch.Tensor  # RMS norm of learned minus exact gradient


@torch.no_grad()
def noisy_classifier_check(
    classifier: torch.nn.Module,
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 6000,
    generator: Optional[torch.Generator] = None,
    progress: bool = True,
) -> NoisyClassifierCheck:
    """A noise-aware classifier p_phi(y | x_t, t) against the exact Bayes classifier at each step,
    on n labelled x_t from the forward process: both accuracies, and the RMS norms of the exact
    classifier gradient grad log p_t(y | x_t) (Luo 2022 eq. 166's guidance term) and of the learned
    gradient's error (``guidance.classifier_grad_fn``, by autograd)."""
    from .guidance import classifier_grad_fn

    check_module(classifier, "classifier")
    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    check_generator(generator)
    rows = []
    for step in progress_bar(steps, desc="classifier check", progress=progress, leave=False):
        x_t, t, y, m_t = _labelled_x_t(mixture, schedule, step, n, generator)
        acc = (classifier(x_t, t).argmax(1) == y).float().mean().item()
        bayes = (m_t.class_log_posterior(x_t).argmax(1) == y).float().mean().item()
        exact = m_t.classifier_grad(x_t, y)
        learned = classifier_grad_fn(classifier, y)(x_t, t)
        error = (learned - exact).pow(2).sum(1).mean().sqrt().item()
        rows.append((acc, bayes, exact.pow(2).sum(1).mean().sqrt().item(), error))
    return NoisyClassifierCheck(*(torch.tensor(column) for column in zip(*rows)))


def classifier_guidance_check(
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    gamma: float,
    n: int = 3000,
    generator: Optional[torch.Generator] = None,
) -> Dict[int, Tuple[float, float, float]]:
    """Classifier guidance (Luo 2022 eq. 166) with exact parts, checked on n labelled x_t ~ p_t at
    each step: ``{step: (eq. 166 error, shift / formula, D&N / shift)}``.

    - eq. 166 error: ``classifier_guided_eps_fn`` against -sqrt(1 - alpha_bar_t) times the score of
      the tilted law p_t(x) p_t(y|x)^gamma, taken by autograd of ``tilted_log_prob`` (no eq. 166
      involved): the largest gap over the largest reference.
    - shift / formula: the change guidance makes to the mean of a DDPM step, projected on
      gamma grad log p_t(y|x_t), over the chapter's beta_t / sqrt(alpha_t): 1 when the step moves
      by gamma beta_t / sqrt(alpha_t) times the gradient.
    - D&N / shift: Dhariwal and Nichol's shift, the posterior variance
      beta_t (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t), over the measured one."""
    from .checks import check_real
    from .guidance import classifier_guided_eps_fn
    from .mixture import exact_classifier_grad_fn, exact_eps_fn, tilted_log_prob
    from .samplers import ddpm_step

    check_mixture(mixture)
    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    gamma = check_real(gamma, "gamma", low=0, low_open=True)
    check_generator(generator)
    alpha_bar, betas = schedule.alpha_bar.tolist(), schedule.betas.tolist()
    exact_eps = exact_eps_fn(mixture, schedule)
    out = {}
    for step in steps:
        m_t = mixture.diffuse(alpha_bar[step])
        x_t, y = m_t.sample(n, generator=generator)
        t = torch.full((n,), step, device=mixture.device)
        grad_fn = exact_classifier_grad_fn(mixture, schedule, y)
        eps = classifier_guided_eps_fn(exact_eps, grad_fn, schedule, gamma)(x_t, t)
        x = x_t.detach().clone().requires_grad_(True)
        log_p = sum(
            tilted_log_prob(m_t, x[y == c], c, gamma).sum() for c in range(mixture.num_classes)
        )
        ref = -((1 - alpha_bar[step]) ** 0.5) * torch.autograd.grad(log_p, x)[0]
        err = (eps - ref).norm(dim=1).max() / ref.norm(dim=1).max()
        # the shift of the DDPM mean that guidance causes, per unit of gamma * grad
        plain = ddpm_step(x_t, exact_eps(x_t, t), step, schedule, None)
        shift, g = ddpm_step(x_t, eps, step, schedule, None) - plain, grad_fn(x_t, t)
        ours = ((shift * g).sum() / (gamma * g.pow(2).sum())).item()
        beta = betas[step]
        dn = posterior_variance(step, schedule) / ours  # Luo eq. 85
        out[step] = (err.item(), ours / (beta / (1 - beta) ** 0.5), dn)
    return out


def class_distance_ratios(
    x: torch.Tensor, y: torch.Tensor, mixture: GaussianMixture
) -> Dict[int, float]:
    """For each class c asked for in ``y``: the sample distance of the samples asked for c to exact
    draws from p(x|c), over its noise floor (:func:`distance_to_exact` with seed c): near 1 for a
    sampler of p(x|c), chapter 1's bar for a learned model is 2."""
    check_mixture(mixture)
    check_tensor(x, "x", floating=True, shape=(None, mixture.dim), nonempty=True)
    check_tensor(y, "y", floating=False, shape=(x.shape[0],))
    return {
        c: distance_to_exact(x[y == c], mixture_draw(mixture, c), seed=c)["ratio"]
        for c in torch.unique(y.cpu()).tolist()
    }


def mean_along(x: torch.Tensor, direction: torch.Tensor) -> float:
    """The samples' mean position along a direction: the mean over i of <x_i, d_i>, with
    ``direction`` one vector [D] for every sample or one per sample [N, D] (say the unit vector of
    each sample's asked class mean). Beside :func:`tilted_mean_along` it says how far out along its
    class guidance pushed the samples."""
    check_finite(check_tensor(x, "x", floating=True, ndim=2, nonempty=True), "x")
    check_tensor(direction, "direction", floating=True)
    shape = (x.shape[1],) if direction.ndim == 1 else tuple(x.shape)
    check_tensor(direction, "direction", dtype=x.dtype, shape=shape, device=x.device, owner="x")
    return (x * direction).sum(1).mean().item()


def tilted_mean_along(
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    direction: torch.Tensor,
    lim: float = 6.0,
    cells: int = 601,
) -> float:
    """The mean of <x, direction> under the tilted law p(x) p(y|x)^gamma / Z of a 2-D mixture (the
    tilted law of the clean data, which eq. 166 would sample only if tilting commuted with the
    noise; it does not, chapter 6; the density of ``mixture.tilted_log_prob``), normalised on a
    ``cells`` x ``cells`` grid over [-lim, lim]^2, in float64. With ``direction`` the unit vector of class y's mean it says how far
    out along its class the law sits."""
    from .checks import check_real
    from .mixture import tilted_log_prob

    check_mixture(mixture)
    if mixture.dim != 2:
        raise ValueError(f"tilted_mean_along works on 2-D mixtures, got dim={mixture.dim}")
    y = int(mixture._check_y(y, 1)[0])
    gamma = check_real(gamma, "gamma", low=0)
    check_tensor(direction, "direction", floating=True, shape=(2,))
    lim = check_real(lim, "lim", low=0, low_open=True)
    cells = check_int(cells, "cells", low=2)
    m64 = mixture.to(dtype=torch.float64)
    axis = torch.linspace(-lim, lim, cells, dtype=torch.float64, device=mixture.device)
    grid = torch.cartesian_prod(axis, axis)  # the points of a cells x cells grid
    along = grid @ direction.to(grid.device, grid.dtype)
    w = torch.softmax(tilted_log_prob(m64, grid, y, gamma), dim=0)
    return (w * along).sum().item()


def marginal_spread(mixture: GaussianMixture) -> float:
    """The :func:`spread` of exact draws from p(x) against exact draws from p(x|y), in closed form,
    for a mixture with one component per class and one covariance Sigma shared by all: by the law of
    total variance tr Cov p(x) = tr Sigma + sum_k w_k |mu_k - mu_bar|^2 and tr Cov p(x|y) = tr Sigma,
    so the spread is 1 + (between-class over within-class variance). It is what guidance with
    gamma = 0 gives, whose samples follow p(x) whatever label was asked."""
    check_mixture(mixture)
    if mixture.num_components != mixture.num_classes:
        raise ValueError(
            f"mixture must have one component per class, got {mixture.num_components} components "
            f"for {mixture.num_classes} classes"
        )
    if not torch.equal(mixture.covs, mixture.covs[:1].expand_as(mixture.covs)):
        raise ValueError("mixture: every component must have the same covariance")
    w, mu = mixture.weights[:, None], mixture.means
    between = (w * (mu - (w * mu).sum(0)).pow(2)).sum() / mixture.covs[0].trace()
    return 1 + between.item()


# ---- chapter 7's judge, and sweeps of image samplers -----------------------------------------------


@torch.no_grad()
def feature_traces(
    judge: torch.nn.Module, x: torch.Tensor, y: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(within, total): the trace of the covariance of the judge's features (its penultimate layer)
    within each class of ``y``, averaged over the classes 0..C-1, and over the whole set, in float64
    (0-dim tensors). 1 - within / total is the share of the variance that lies between classes,
    to which the Fréchet distance in these features responds first (chapter 7). ``x`` and ``y``
    move to the judge's device."""
    _check_judge(judge)
    check_finite(check_tensor(x, "x", floating=True, nonempty=True), "x")
    check_tensor(y, "y", floating=False, shape=(x.shape[0],))
    device = next(judge.parameters(), x).device  # the judge's (x's for one without weights)
    f, y = judge.features(x.to(device)).double(), y.to(device)
    low, high = (int(v) for v in y.aminmax())
    if low < 0:
        raise ValueError(f"y must lie in 0..C-1, got {low}")
    classes = high + 1
    if any(int((y == c).sum()) < 2 for c in range(classes)):
        raise ValueError("y must hold every class 0..C-1 at least twice")
    per_class = [f[y == c].T.cov().trace() for c in range(classes)]
    return torch.stack(per_class).mean(), f.T.cov().trace()


@torch.no_grad()
def noisy_accuracy(
    classifier: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: Schedule,
    steps: Sequence[int],
) -> Dict[int, float]:
    """``{step: accuracy}``: the share of images ``x`` (labels ``y``) that a noise-aware classifier
    ``classifier(x_t, t)`` assigns to their label once noised to the 0-based ``step`` by the forward
    process (Luo eq. 70), the noise of each step from a generator on x's device seeded with the
    step itself. How much a guide for classifier guidance (Luo eq. 166) knows at each level."""
    check_module(classifier, "classifier")
    check_finite(check_tensor(x, "x", floating=True, nonempty=True), "x")
    check_tensor(y, "y", floating=False, shape=(x.shape[0],))
    _check_label_range(y, classifier)
    out = {}
    for step in check_levels(schedule, steps):
        noisy, t = q_sample_at(x, step, schedule)  # the noise seeded with the step
        out[step] = (classifier(noisy, t).argmax(1) == y).double().mean().item()
    return out


class ImageSweep(dict):
    """What :func:`image_sweep` returns: ``{key: SeededImageMetrics}`` in the order of the samplers,
    with ``first`` (``{key: the first seed's images}``, unclamped) and the per-key views below."""

    def __init__(self, results: Mapping, first: Mapping) -> None:
        for name, value in (("results", results), ("first", first)):
            if not isinstance(value, Mapping):
                raise TypeError(
                    f"{name} must be a mapping {{key: ...}}, got {type(value).__name__}"
                )
        if not all(isinstance(r, SeededImageMetrics) for r in results.values()):
            raise TypeError("results must map each key to a SeededImageMetrics")
        if not set(first) <= set(results):
            raise ValueError("first must hold first-seed images of keys of results only")
        super().__init__(results)
        self.first = dict(first)

    def means(self, metric: str) -> Dict:
        """``{key: mean over seeds of metric}`` ("fidelity", "frechet" or "diversity")."""
        return {key: r.mean(metric) for key, r in self.items()}

    def curve(self, metric: str) -> list:
        """``[(mean, std), ...]`` of ``metric`` over seeds, one pair per key in order: a curve
        with error bars for :func:`~diffcourse.plots.curve_panels`."""
        return [(r.mean(metric), r.std(metric)) for r in self.values()]

    def per_seed(self, metric: str) -> Dict:
        """``{key: the metric of every seed}`` (a float64 tensor, in seed order)."""
        return {key: r.values(metric) for key, r in self.items()}

    def mean_table(self) -> Dict:
        """``{key: {metric: mean over seeds}}``, every metric of every sampler (a table for
        :func:`~diffcourse.report.glue_nested` and :func:`~diffcourse.report.table`)."""
        return {key: r.means() for key, r in self.items()}


def image_sweep(
    classifier: torch.nn.Module,
    samplers: Mapping,
    y: torch.Tensor,
    ref_x: torch.Tensor,
    ref_y: torch.Tensor,
    seeds: int = 1,
    shape: Sequence[int] = (1, 8, 8),
) -> ImageSweep:
    """:func:`image_metrics_over_seeds` of every sampler of ``samplers`` (key -> ``sample(noise,
    generator)``, e.g. :func:`~diffcourse.samplers.sampler_fn`), all on the same ``seeds``
    starting noises and generator seeds, so that their differences are the methods', not luck's;
    keeps each sampler's first-seed images for pictures (``result.first[key]``)."""
    check_mapping(samplers, "samplers", "mapping key -> sample", "sampler")
    for key, sample in samplers.items():
        check_callable(sample, f"samplers[{key!r}]")
    results, first = {}, {}
    for key, sample in progress_bar(samplers.items(), desc="samplers", leave=False):

        def kept(noise: torch.Tensor, generator, sample=sample, key=key) -> torch.Tensor:
            x = sample(noise, generator)
            first.setdefault(key, x)
            return x

        results[key] = image_metrics_over_seeds(classifier, kept, y, ref_x, ref_y, seeds, shape)
    return ImageSweep(results, first)


# ---- chapters 5 and 6: the branches, the guided prediction, sweeps over gamma -------------------------


def branch_errors(
    models: Mapping,
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 3000,
    seed: int = 0,
) -> Dict[Tuple[str, object], torch.Tensor]:
    """The two branches of classifier-free networks against the exact scores (Luo eq. 170's two
    terms): ``{("cond", key): ..., ("uncond", key): ...}`` for each ``key, model`` of ``models``,
    each :func:`relative_eps_error` at ``steps``: the conditional branch ``model.eps_fn(y)`` against
    the exact predictor of p_t(x_t | y), the unconditional one ``model.eps_fn()`` (the null label)
    against that of p_t(x_t), all on the same points (same ``seed``)."""
    from .mixture import exact_eps_fn

    check_mapping(models, "models", "mapping key -> conditional model", "model")
    exact = lambda y=None: exact_eps_fn(mixture, schedule, y)  # noqa: E731
    args = (mixture, schedule, steps, n, seed)
    out = {}
    for key, model in models.items():
        check_module(model, f"models[{key!r}]")
        out["cond", key] = relative_eps_error(model.eps_fn, exact, *args)
        uncond = lambda y, model=model: model.eps_fn()  # noqa: E731
        out["uncond", key] = relative_eps_error(uncond, lambda y: exact(), *args)
    return out


def window_means(
    values: torch.Tensor, t: torch.Tensor, windows: Mapping[str, Tuple[float, float]]
) -> Dict[str, float]:
    """``{name: mean of values where lo <= t <= hi}`` for each window ``name: (lo, hi)``: a curve
    over the steps t summarised over early, middle and late stretches of the chain."""
    check_finite(check_tensor(values, "values", ndim=1), "values")
    check_tensor(t, "t", shape=tuple(values.shape))
    check_mapping(windows, "windows", "mapping name -> (lo, hi)", "window")
    out = {}
    for name, (lo, hi) in windows.items():
        inside = (t >= lo) & (t <= hi)
        if not inside.any():
            raise ValueError(f"windows[{name!r}] = ({lo}, {hi}) holds none of the steps t")
        out[name] = values[inside].mean().item()
    return out


class Sweep(NamedTuple):
    """What :func:`guidance_sweep` returns, each keyed by (kind, gamma): the samples, their
    (class agreement, spread) and the seconds their sampling took."""

    samples: Dict[Tuple[str, float], torch.Tensor]
    values: Dict[Tuple[str, float], Tuple[float, Optional[float]]]
    seconds: Dict[Tuple[str, float], float]


def guidance_sweep(
    builders: Mapping[str, Callable[[float], Callable]],
    gammas: Union[Sequence[float], Mapping[str, Sequence[float]]],
    sample: Callable[[Callable], torch.Tensor],
    y: torch.Tensor,
    mixture: GaussianMixture,
    references: Optional[Mapping[int, torch.Tensor]] = None,
) -> Sweep:
    """Each guidance rule at each scale, sampled and measured. For every ``kind, build`` of
    ``builders`` and every gamma (``gammas``, or ``gammas[kind]``): ``x = sample(build(gamma))``
    (timed, device-synchronised), then :func:`agreement_and_spread` of ``x`` for the asked labels
    ``y``. ``sample`` should start every run from the same noise with the same step noise
    (:func:`diffcourse.samplers.seeded_sample`), so the kinds differ only by their rule."""
    from .device import timed

    check_mapping(builders, "builders", "mapping kind -> (gamma -> eps_fn)", "builder")
    check_callable(sample, "sample")
    if isinstance(gammas, Mapping):
        missing = [k for k in builders if k not in gammas]
        if missing:
            raise ValueError(f"gammas has no entry for {missing}")
        gammas = {k: check_reals(gammas[k], f"gammas[{k!r}]", low=0) for k in builders}
    else:
        gammas = dict.fromkeys(builders, check_reals(gammas, "gammas", low=0))
    samples, values, seconds = {}, {}, {}
    for kind, build in builders.items():
        check_callable(build, f"builders[{kind!r}]")
        for g in gammas[kind]:
            eps_fn = build(g)
            seconds[kind, g], samples[kind, g] = timed(partial(sample, eps_fn))
            values[kind, g] = agreement_and_spread(samples[kind, g], y, mixture, references)
    return Sweep(samples, values, seconds)


def guided_eps_errors(
    models: Mapping,
    mixture: GaussianMixture,
    schedule: Schedule,
    gammas: Sequence[float],
    steps: Sequence[int],
    n: int = 3000,
    seed: int = 0,
) -> Dict[object, List[float]]:
    """For each ``key, model`` of ``models`` and each gamma: the mean over ``steps`` of
    :func:`relative_eps_error` of the network's guided prediction (Luo eq. 170,
    ``guidance.batched_cfg_eps_fn``) against eq. 170 with exact scores (``exact_cfg_eps_fn``) at the
    same gamma, on the same points throughout: ``{key: [error at each gamma]}``. CFG multiplies the
    branches' errors: this is the error it makes."""
    from .guidance import batched_cfg_eps_fn
    from .mixture import exact_cfg_eps_fn

    check_mapping(models, "models", "mapping key -> conditional model", "model")
    gammas = check_reals(gammas, "gammas", low=0)
    out = {}
    for key, model in models.items():
        check_module(model, f"models[{key!r}]")
        out[key] = []
        for g in gammas:
            ours = lambda y, g=g, model=model: batched_cfg_eps_fn(model, y, g)  # noqa: E731
            exact = lambda y, g=g: exact_cfg_eps_fn(mixture, schedule, y, g)  # noqa: E731
            errors = relative_eps_error(ours, exact, mixture, schedule, steps, n, seed)
            out[key].append(errors.mean().item())
    return out


def tilted_comparison(
    samples: Mapping[str, torch.Tensor],
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    reference: Optional[torch.Tensor] = None,
    seed: int = 4,
) -> Dict[str, Tuple[float, Optional[float]]]:
    """``{name: (distance ratio, spread)}`` for samples asked for class ``y`` at scale gamma:
    the sample distance to exact draws from the tilted law p(x|y)^gamma p(x)^(1 - gamma) / Z as a
    multiple of its noise floor (:func:`distances_to_exact`, :func:`tilted_draw`; chapter 6), and the
    :func:`spread` against ``reference`` (exact draws from p(x|y); None without)."""
    dist = distances_to_exact(samples, tilted_draw(mixture, y, gamma), seed=seed)
    return {
        k: (dist[k]["ratio"], None if reference is None else spread(x, reference))
        for k, x in samples.items()
    }


def exact_draws(
    mixture: GaussianMixture, y: int, n: int, seed: int = 0, gamma: Optional[float] = None
) -> torch.Tensor:
    """n exact draws from p(x|y), or with ``gamma`` from the tilted law
    p(x|y)^gamma p(x)^(1 - gamma) / Z (``mixture.sample_tilted``, chapter 6), from a generator
    seeded with ``seed`` on the mixture's device: the references a sampler is held against."""
    n, seed = check_int(n, "n", low=1), check_int(seed, "seed")
    gen = torch.Generator(device=check_mixture(mixture).device).manual_seed(seed)
    if gamma is None:
        return mixture.sample(n, y, generator=gen)[0]
    return sample_tilted(mixture, y, gamma, n, generator=gen)


def relative_grad_errors(
    grad_fors: Mapping[str, Callable],
    mixture: GaussianMixture,
    schedule: Schedule,
    steps: Sequence[int],
    n: int = 6000,
    seed: int = 0,
) -> Dict[str, torch.Tensor]:
    """:func:`relative_grad_error` of several classifiers' gradients on the same points:
    ``{name: errors at steps}`` for each ``name, grad_for`` of ``grad_fors`` (Luo eq. 165-167)."""
    check_mapping(grad_fors, "grad_fors", "mapping name -> grad_for", "grad_for")
    return {
        name: relative_grad_error(f, mixture, schedule, steps, n, seed)
        for name, f in grad_fors.items()
    }
