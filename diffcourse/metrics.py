"""How close is close: sample distances with their noise floor, and score errors over time."""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .mixture import GaussianMixture, Label
from .schedules import Schedule, q_sample
from .targets import eps_to_score

Draw = Callable[[int, torch.Generator], torch.Tensor]


def sliced_w2(x: torch.Tensor, y: torch.Tensor, projections: int = 256,
              generator: Optional[torch.Generator] = None) -> float:
    """Sliced Wasserstein-2 distance between two equal-size point sets [N, D].

    Each random unit direction turns both sets into 1-D samples, whose W2 is the root-mean-square
    gap between their sorted values; the squared gaps are averaged over directions.
    """
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must both be [N, D] of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError("x and y need at least 2 points")
    x, y = x.detach().double().cpu(), y.detach().double().cpu()
    dirs = torch.randn(x.shape[1], projections, generator=generator, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    # numpy's sort along contiguous rows is ~10x faster than torch's on a CPU; same sorted values
    px = np.sort((x @ dirs).T.contiguous().numpy(), axis=1)
    py = np.sort((y @ dirs).T.contiguous().numpy(), axis=1)
    return float(np.sqrt(((px - py) ** 2).mean()))


def sample_distance(x: torch.Tensor, ref: torch.Tensor, repeats: int = 5, projections: int = 256,
                    seed: int = 0) -> float:
    """Sliced W2 averaged over ``repeats`` disjoint equal chunks of ``x`` against those of ``ref``.

    One chunk's figure swings a lot by chance; averaging chunks steadies it.
    """
    if x.shape != ref.shape:
        raise ValueError(f"x {tuple(x.shape)} and ref {tuple(ref.shape)} must have the same shape")
    if repeats < 1 or x.shape[0] < 2 * repeats:
        raise ValueError(f"repeats must be >= 1 with at least 2 points per chunk, got {repeats}")
    gen = torch.Generator().manual_seed(seed)
    return sum(sliced_w2(a, b, projections, gen) for a, b in zip(x.chunk(repeats), ref.chunk(repeats))) / repeats


def distance_to_exact(samples: torch.Tensor, draw: Draw, repeats: int = 5, projections: int = 256,
                      seed: int = 0) -> Dict[str, float]:
    """The sample distance of ``samples`` to exact draws, next to its noise floor.

    ``draw(n, generator)`` returns n exact draws. The floor is the same figure between two
    independent sets of exact draws of the same size; ``ratio`` = distance / floor, so a perfect
    sampler sits near 1.
    """
    n = samples.shape[0]
    gen = torch.Generator().manual_seed(seed)
    ref, ref2, ref3 = (draw(n, gen).to(samples.dtype).cpu() for _ in range(3))
    distance = sample_distance(samples.cpu(), ref, repeats, projections, seed)
    floor = sample_distance(ref2, ref3, repeats, projections, seed)
    return {"distance": distance, "floor": floor, "ratio": distance / floor}


def mixture_draw(mixture: GaussianMixture, y: Label = None) -> Draw:
    """``draw(n, generator)`` for :func:`distance_to_exact`: exact draws from p(x) or p(x|y)."""
    return lambda n, gen: mixture.sample(n, y, generator=gen)[0]


@torch.no_grad()
def relative_score_error(eps_fn, mixture: GaussianMixture, schedule: Schedule, steps: Sequence[int],
                         n: int = 4000, y: Label = None, seed: int = 0) -> torch.Tensor:
    """At each step t: RMS(s_theta - s) / RMS(s) over x_t drawn from the forward process.

    s is the exact score of p_t (``mixture.diffuse(alpha_bar_t).score``), s_theta the score of the
    noise prediction (s = -eps / sqrt(1 - alpha_bar)). A ratio of root-mean-squares, not a mean of
    per-point ratios, which blow up where the exact score is near zero.
    """
    gen = torch.Generator().manual_seed(seed)
    device = mixture.device
    out = []
    for step in steps:
        x0, labels = mixture.sample(n, y, generator=gen)
        t = torch.full((n,), int(step), dtype=torch.long)
        x_t = q_sample(x0.cpu(), t, schedule, generator=gen).to(device)
        a = float(schedule.alpha_bar[int(step)])
        exact = mixture.diffuse(a).score(x_t, None if y is None else labels)
        probe = x_t.float()
        learned = eps_to_score(eps_fn(probe, t.to(probe.device)), a).to(exact.dtype)
        out.append(((learned - exact).pow(2).mean() / exact.pow(2).mean()).sqrt().item())
    return torch.tensor(out)


def class_agreement(x: torch.Tensor, y: Label, mixture: GaussianMixture) -> float:
    """Share of samples ``x`` asked for label(s) ``y`` that the exact Bayes classifier
    (``argmax_c p(c|x)`` at t = 0) assigns to y. Ceiling: exact draws from p(x|y); floor:
    unconditional draws (about p(y) when y is fixed)."""
    x = x.to(mixture.device, mixture.dtype)
    y = mixture._check_y(y, x.shape[0])
    return (mixture.class_log_posterior(x).argmax(1) == y).double().mean().item()


def spread(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Diversity: trace of the samples' covariance over that of ``reference`` (exact draws from p(x|y))."""
    if x.ndim != 2 or reference.ndim != 2 or x.shape[1] != reference.shape[1]:
        raise ValueError("x and reference must be [N, D] with the same D")
    tr = lambda z: torch.cov(z.double().T).trace() if z.shape[1] > 1 else z.double().var()
    return (tr(x.cpu()) / tr(reference.cpu())).item()


# ---- images: fidelity, Fréchet distance, diversity ------------------------------------------------------

def _check_features(a: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(a, torch.Tensor) or a.ndim != 2 or a.shape[0] < 2:
        raise ValueError(f"{name} must be a [N, F] tensor of features with N >= 2, got {tuple(getattr(a, 'shape', ()))}")
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
        raise ValueError(f"a and b must have the same number of features, got {a.shape[1]} and {b.shape[1]}")
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    w, v = torch.linalg.eigh(cov_a)
    root_a = v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    mean_term = (a.mean(0) - b.mean(0)).pow(2).sum()
    return (mean_term + cov_a.trace() + cov_b.trace() - 2 * cross).clamp(min=0).item()


@torch.no_grad()
def fidelity(classifier: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Share of images ``x`` that the evaluation classifier assigns to the label ``y`` they were asked
    for. On held-out images with their true labels it is the classifier's accuracy."""
    if not isinstance(y, torch.Tensor) or y.shape != (x.shape[0],):
        raise ValueError(f"y must be a tensor of shape ({x.shape[0]},)")
    pred = torch.cat([classifier(chunk).argmax(1) for chunk in x.split(batch_size)])
    return (pred == y.to(pred.device)).double().mean().item()


def diversity(x: torch.Tensor, y: torch.Tensor, ref_x: torch.Tensor, ref_y: torch.Tensor) -> float:
    """Mean pairwise Euclidean distance between images of the same class, averaged over classes,
    over the same figure for reference images (held-out data): 1 is the data's own variety, and
    less means samples of a class look more alike."""
    def within(images: torch.Tensor, labels: torch.Tensor, name: str) -> torch.Tensor:
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


@torch.no_grad()
def image_metrics(classifier: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                  ref_x: torch.Tensor, ref_y: torch.Tensor) -> Dict[str, float]:
    """Fidelity, Fréchet distance (in the evaluation classifier's features, against ``ref_x``) and
    diversity of samples ``x`` that were asked for labels ``y``; ``ref_x``/``ref_y`` are held-out images."""
    feats = lambda z: torch.cat([classifier.features(chunk) for chunk in z.split(1000)])
    return {"fidelity": fidelity(classifier, x, y),
            "frechet": frechet_distance(feats(x), feats(ref_x)),
            "diversity": diversity(x, y, ref_x, ref_y)}


def knn_entropy(x: torch.Tensor, k: int = 5) -> float:
    """Differential entropy (nats) of the law behind the samples ``x`` [N, D], by the Kozachenko-
    Leonenko k-nearest-neighbour estimator:
    H = psi(N) - psi(k) + log V_D + (D / N) sum_i log r_i, r_i the distance from x_i to its k-th
    nearest neighbour and V_D the volume of the unit ball in D dimensions. Consistent as N grows; in
    two dimensions a few thousand points give it to a few hundredths of a nat. Diversity as
    Wu et al. (2024) measure it: guidance lowers it."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ValueError(f"x must be a tensor [N, D], got {tuple(getattr(x, 'shape', ()))}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < x.shape[0]:
        raise ValueError(f"k must be an int in 1..N-1, got {k!r}")
    x = x.detach().double().cpu()
    if not torch.isfinite(x).all():
        raise ValueError("x holds NaN or infinite values")
    n, d = x.shape
    radii = torch.cat([torch.cdist(chunk, x).topk(k + 1, dim=1, largest=False).values[:, k]
                       for chunk in x.split(1024)])
    if (radii <= 0).any():
        raise ValueError("x holds repeated points: the estimator needs distinct samples")
    log_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    psi = lambda v: torch.special.digamma(torch.tensor(float(v), dtype=torch.float64)).item()
    return psi(n) - psi(k) + log_ball + d * radii.log().mean().item()
