"""The three equivalent targets (x0, noise, score) and the conversions between them, and to v.

Given x_t = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps, Tweedie's formula gives
``score = -eps / sqrt(1 - alpha_bar)`` (Luo eq. 151) and
``x0 = (x_t + (1 - alpha_bar) score) / sqrt(alpha_bar)`` (Luo eq. 133). Every function takes
``alpha_bar`` as a float or a tensor that broadcasts against the batch.
"""

from __future__ import annotations

import torch

from .checks import check_alike, check_alpha_bar, check_tensor


def _checked(alpha_bar, zero: bool, one: bool, **tensors: torch.Tensor):
    """The conversions' checks: floating-point tensors (an integer tensor would be truncated) of one
    shape, on one device, and alpha_bar in [0, 1] with the ends the formula divides by excluded.

    alpha_bar is one level for all samples, or one per sample: shape [N] (``schedule.alpha_bar[t]``)
    is turned into [N, 1, ...], since broadcast as it is it would run along the last (feature) axis."""
    check_alike(**tensors)  # x_t and the prediction: one shape and device, no broadcasting
    alpha_bar = check_alpha_bar(alpha_bar, zero=zero, one=one)
    if not isinstance(alpha_bar, torch.Tensor) or alpha_bar.numel() == 1:
        return alpha_bar
    shape = next(iter(tensors.values())).shape
    if alpha_bar.ndim == 1 and len(shape) > 1 and alpha_bar.shape[0] == shape[0]:
        return alpha_bar.reshape(-1, *[1] * (len(shape) - 1))
    if (
        alpha_bar.ndim != len(shape)
        or alpha_bar.shape[0] not in (1, shape[0])
        or any(n != 1 for n in alpha_bar.shape[1:])
    ):
        raise ValueError(
            f"alpha_bar must be one level, one per sample (shape [{shape[0]}]) or shaped "
            f"[{shape[0]}, 1, ...] for inputs of shape {tuple(shape)}, got {tuple(alpha_bar.shape)}"
        )
    return alpha_bar


def eps_to_score(eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """score = -eps / sqrt(1 - alpha_bar)  (Luo eq. 151)."""
    alpha_bar = _checked(alpha_bar, True, False, eps=eps)
    return -eps / torch.as_tensor(1 - alpha_bar, dtype=eps.dtype, device=eps.device).sqrt()


def score_to_eps(score: torch.Tensor, alpha_bar) -> torch.Tensor:
    """eps = -sqrt(1 - alpha_bar) score, the inverse of :func:`eps_to_score` (Luo eq. 151 solved
    for eps)."""
    alpha_bar = _checked(alpha_bar, True, True, score=score)
    return -score * torch.as_tensor(1 - alpha_bar, dtype=score.dtype, device=score.device).sqrt()


def score_to_x0(x_t: torch.Tensor, score: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x0 = (x_t + (1 - alpha_bar) score) / sqrt(alpha_bar)  (Tweedie; Luo eq. 133)."""
    alpha_bar = _checked(alpha_bar, False, True, x_t=x_t, score=score)
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return (x_t + (1 - a) * score) / a.sqrt()


def x0_to_score(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """score = -(x_t - sqrt(alpha_bar) x0) / (1 - alpha_bar), the inverse of :func:`score_to_x0`
    (Luo eq. 133 solved for the score)."""
    alpha_bar = _checked(alpha_bar, True, False, x_t=x_t, x0=x0)
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return -(x_t - a.sqrt() * x0) / (1 - a)


def eps_to_x0(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar)  (Luo eq. 115)."""
    alpha_bar = _checked(alpha_bar, False, True, x_t=x_t, eps=eps)
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return (x_t - (1 - a).sqrt() * eps) / a.sqrt()


def x0_to_eps(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """eps = (x_t - sqrt(alpha_bar) x0) / sqrt(1 - alpha_bar), the inverse of :func:`eps_to_x0`
    (Luo eq. 115 solved for eps)."""
    alpha_bar = _checked(alpha_bar, True, False, x_t=x_t, x0=x0)
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return (x_t - a.sqrt() * x0) / (1 - a).sqrt()


def eps_to_v(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0 = (eps - sqrt(1 - alpha_bar) x_t) / sqrt(alpha_bar).

    The v-prediction target (Salimans & Ho 2022, Sec. 4), which Lin et al.'s networks predict; not
    chapter 11's flow velocity. The second form follows on substituting x0 from Luo eq. 115. It is
    affine in eps, so eq. 170 gives the same prediction in either target; a rescaling does not."""
    alpha_bar = _checked(alpha_bar, False, True, x_t=x_t, eps=eps)
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return (eps - (1 - a).sqrt() * x_t) / a.sqrt()


def v_to_eps(x_t: torch.Tensor, v: torch.Tensor, alpha_bar) -> torch.Tensor:
    """eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t, the inverse of :func:`eps_to_v`."""
    alpha_bar = _checked(alpha_bar, True, True, x_t=x_t, v=v)
    a = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
    return a.sqrt() * v + (1 - a).sqrt() * x_t


def posterior_means(x_t: torch.Tensor, pool: torch.Tensor, alpha_bar) -> tuple:
    """(E[x0 | x_t], E[eps | x_t]) straight from their definitions, with no score in sight: each
    data draw x0_j of ``pool`` [M, D] is weighted by how likely it is to have produced x_t,
    q(x_t | x0_j) = N(sqrt(alpha_bar) x0_j, (1 - alpha_bar) I) (Luo eq. 70), normalised over the
    pool, and the averages are of x0_j and of the noise eps_j = (x_t - sqrt(alpha_bar) x0_j) /
    sqrt(1 - alpha_bar) that takes x0_j to x_t. The brute-force answer that Tweedie's formula
    (Luo eq. 133) and eq. 151 are held against; exact as the pool grows. Memory: [N, M, D].
    ``alpha_bar`` is one level for all x_t or one per row of x_t, as in the conversions."""
    a = _checked(alpha_bar, True, False, x_t=x_t)
    check_tensor(pool, "pool", floating=True, device=x_t.device, owner="x_t")
    if x_t.ndim != 2 or pool.ndim != 2 or x_t.shape[1] != pool.shape[1]:
        raise ValueError(
            f"x_t and pool must be [N, D] and [M, D] with one D, got {tuple(x_t.shape)} and "
            f"{tuple(pool.shape)}"
        )
    if isinstance(a, torch.Tensor) and a.ndim == 2:  # one level per row: [N, 1] -> [N, 1, 1]
        a = a[..., None]
    eps_j = (x_t[:, None] - a**0.5 * pool[None]) / (1 - a) ** 0.5
    w = torch.softmax(-eps_j.pow(2).sum(-1) / 2, dim=1)  # q(x_t | x0_j), normalised
    return w @ pool, (w[..., None] * eps_j).sum(1)
