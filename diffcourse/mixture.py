"""Labelled Gaussian mixtures: the one family where every quantity of the course is exact.

A mixture p(x) = sum_k w_k N(x; mu_k, Sigma_k) whose component k belongs to class ``labels[k]``
gives in closed form p(x), p(x|y), p(y|x), their scores, and, because the forward process maps a
Gaussian to a Gaussian, the same for every noisy law p_t (see :meth:`GaussianMixture.diffuse`).
The labs hold learned networks against these answers.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from .checks import (
    check_callable,
    check_device,
    check_float_dtype,
    check_generator,
    check_int,
    check_labels,
    check_mixture,
    check_real,
    check_schedule,
    check_steps,
    check_tensor,
    known_step,
    read_values,
)
from .flow import check_times
from .guidance import _check_gamma, classifier_free_eps_fn, classifier_free_guidance
from .schedules import Schedule
from .targets import score_to_eps

Label = Union[int, torch.Tensor, None]


class GaussianMixture:
    """p(x) = sum_k w_k N(mu_k, Sigma_k), component k of class ``labels[k]``.

    Args:
        means: [K, D] floating tensor; its dtype (float32 or float64) and device are the mixture's.
        covs: [K, D, D] symmetric positive-definite covariances.
        weights: [K] non-negative mixing weights (normalised here).
        labels: [K] class of each component, covering 0..C-1 (a class may own several components).
    """

    def __init__(
        self, means: torch.Tensor, covs: torch.Tensor, weights: torch.Tensor, labels: torch.Tensor
    ):
        check_tensor(means, "means", floating=True)
        check_float_dtype(means.dtype, "means: its dtype")  # float16 is not positive definite
        if means.ndim != 2 or means.shape[0] < 1 or means.shape[1] < 1:
            raise ValueError(f"means must have shape [K, D], got {tuple(means.shape)}")
        if not torch.isfinite(means).all():
            raise ValueError("means must be finite (no NaN or inf)")
        K, D = means.shape
        dtype, device = means.dtype, means.device
        for name, value in (("covs", covs), ("weights", weights), ("labels", labels)):
            if not isinstance(value, (torch.Tensor, list, tuple)):
                raise TypeError(f"{name} must be a tensor, got {type(value).__name__}")
        covs = torch.as_tensor(covs, dtype=dtype, device=device)
        weights = torch.as_tensor(weights, dtype=dtype, device=device)
        labels = torch.as_tensor(labels, device=device)
        if covs.shape != (K, D, D):
            raise ValueError(f"covs must have shape {(K, D, D)}, got {tuple(covs.shape)}")
        if not torch.isfinite(covs).all():
            raise ValueError("covs must be finite (no NaN or inf)")
        if not torch.allclose(covs, covs.transpose(1, 2)):
            raise ValueError("covs must be symmetric")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape ({K},), got {tuple(weights.shape)}")
        if not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("weights must be finite, non-negative and not all zero")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
        if labels.shape != (K,):
            raise ValueError(f"labels must have shape ({K},), got {tuple(labels.shape)}")
        labels = labels.long()
        if (labels < 0).any():
            raise ValueError("labels must be >= 0")
        C = int(labels.max()) + 1
        if torch.bincount(labels, minlength=C).min() == 0:
            raise ValueError(f"labels must cover every class 0..{C - 1}")
        try:
            chol = torch.linalg.cholesky(covs)
        except RuntimeError as err:
            raise ValueError("covs must be positive definite") from err
        # member[c, k] is True when component k belongs to class c
        self._set(
            means,
            covs,
            weights,
            labels,
            chol,
            labels[None, :] == torch.arange(C, device=device)[:, None],
            means.abs().amax().item(),
            bool((covs == covs[:1]).all()),
        )

    def _set(self, means, covs, weights, labels, chol, member, mu_max, shared) -> None:
        """Store a checked mixture; ``mu_max`` = max |mu_ki| and ``shared`` (one covariance for all
        components) are given, not read back from the device (diffuse runs at every step)."""
        self.means, self.covs, self.labels = means, covs, labels
        self.weights = weights / weights.sum()
        self._chol = chol
        self._prec = torch.cholesky_inverse(chol)
        self._logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(-1)
        self._member = member
        # beyond this |x_i| the means are taken apart from x (see _component_log_joint)
        self._mu_max, self._far, self._shared = mu_max, 1e4 * (1 + mu_max), shared
        if shared:  # the expanded form's terms, used only with one covariance for all components
            wide = torch.float64 if means.device.type != "mps" else means.dtype
            self._prec_mu = torch.einsum("kij,kj->ki", self._prec, means).to(wide)  # Sigma^-1 mu_k
            self._mu_prec_mu = (means.to(wide) * self._prec_mu).sum(-1)  # mu_k^T Sigma^-1 mu_k
            # log w_k - mu_k^T Sigma^-1 mu_k / 2: with x^T Sigma^-1 mu_k, the log joint of component
            # k up to the terms every component shares (see _shared_logits)
            self._lin_const = torch.log(self.weights).to(wide) - 0.5 * self._mu_prec_mu

    # ---- basic facts -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self._member.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def class_weights(self) -> torch.Tensor:
        """p(y) for every class: [C]."""
        return (self._member * self.weights).sum(1)

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """This mixture on ``device`` and/or in the floating-point ``dtype`` (its labels stay long)."""
        device = check_device(device)
        dtype = None if dtype is None else check_float_dtype(dtype)
        return GaussianMixture(
            self.means.to(device=device, dtype=dtype),
            self.covs.to(device=device, dtype=dtype),
            self.weights.to(device=device, dtype=dtype),
            self.labels.to(device),
        )

    def __repr__(self) -> str:
        return (
            f"GaussianMixture(components={self.num_components}, classes={self.num_classes}, "
            f"dim={self.dim}, dtype={self.dtype})"
        )

    # ---- input checks --------------------------------------------------------------------------
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        return check_tensor(
            x,
            "x",
            floating=True,
            shape=(None, self.dim),
            dtype=self.dtype,
            device=self.device,
            owner="the mixture",
        )

    def _check_y(self, y, n: int) -> torch.Tensor:
        """y as a LongTensor[n] of labels in 0..C-1 on the mixture's device (an int: all rows)."""
        return check_labels(y, n, self.num_classes, self.device, allow_int=True)

    def _check_label(self, y: Label) -> None:
        """A builder's label argument checked when it is given, not at the first call of what it
        builds: None, an int, or labels [N]."""
        if y is not None:
            self._check_y(y, y.shape[0] if isinstance(y, torch.Tensor) and y.ndim == 1 else 1)

    # ---- densities -----------------------------------------------------------------------------
    def _solve(self, x: torch.Tensor) -> torch.Tensor:
        """z_k = L_k^-1 (x - mu_k) for every component, L_k the Cholesky factor of Sigma_k:
        [N, K, D], in the mixture's dtype. One batched solve per component with the N points as
        right-hand sides (a batch of N x K single-vector solves is ~30x slower)."""
        diff = x[:, None, :] - self.means[None]  # [N, K, D]
        z = torch.linalg.solve_triangular(self._chol, diff.permute(1, 2, 0), upper=False)
        return z.permute(2, 0, 1)

    def _component_log_joint(
        self, x: torch.Tensor, keep: Optional[torch.Tensor] = None, z: Optional[torch.Tensor] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """log w_k + log N(x; mu_k, Sigma_k) for every component as ``base[:, None] + lj``: ``lj``
        [N, K] and ``base`` [N], in float64 (except on MPS, which has none), with the components
        that ``keep`` [N, K] (bool) leaves out at -inf. Callers convert their result back to the
        mixture's dtype.

        Near the data ``base`` is 0 and ``lj`` the log joint itself. Far from it two things break
        in the squared distance maha_k = |L_k^-1 (x - mu_k)|^2, and both are mended without a host
        read (samplers call this at every step): it overflows (float64 beyond |x| ~ 1e150), so
        ``base`` takes -maha/2 of the nearest component, which alone may be -inf, and ``lj`` the
        differences; and x - mu_k loses mu_k in the rounding of x (|x| ~ 1e20: every class would
        look alike), so with a shared covariance the differences come from the expanded form
        maha_k - maha_j = -2 x^T Sigma^-1 (mu_k - mu_j) + mu_k^T Sigma^-1 mu_k - mu_j^T Sigma^-1 mu_j.
        ``z``: :meth:`_solve` of x, if computed already (maha = |z|^2).
        """
        z = self._solve(x) if z is None else z
        wide = self.dtype if x.device.type == "mps" else torch.float64
        z = z.to(wide)
        if self.dtype == torch.float32 and wide == torch.float64:
            # z was solved in float32 (|z| < 3.5e38): float64 holds its squares, no scale to find
            s, maha = torch.ones(1, dtype=wide, device=x.device), z.square().sum(-1)
        else:
            # a power of two per row, 1 unless |z|^2 would overflow: exact, so near rows are untouched
            half = math.log2(torch.finfo(wide).max) // 2 - 8
            s = torch.exp2((torch.log2(z.abs().amax(dim=(1, 2))).ceil() - half).clamp(min=0))
            maha = (z / s[:, None, None]).square().sum(-1)  # maha / s^2
        log_norm = -0.5 * (self.dim * math.log(2 * math.pi) + self._logdet.to(wide))
        log_w = torch.log(self.weights).to(wide) + log_norm
        if keep is not None:
            maha = maha.masked_fill(~keep, float("inf"))
        near = -0.5 * maha + log_w  # the log joint where s = 1 and x is near the data
        ref = maha.argmin(dim=1, keepdim=True)  # the nearest component kept
        gap = s[:, None] * (s[:, None] * (maha - maha.gather(1, ref)))  # maha_k - maha_ref
        far = x.abs().amax(dim=1) > self._far
        if self._shared:
            xs = x.to(wide) / s[:, None]
            lin = s[:, None] * (-2 * xs @ self._prec_mu.T) + self._mu_prec_mu  # maha - x^T P x
            gap = torch.where(far[:, None], lin - lin.gather(1, ref), gap)
        rel = log_w - 0.5 * gap
        if keep is not None:
            rel = rel.masked_fill(~keep, float("-inf"))
        split = far | (s > 1)
        base = torch.where(split, -0.5 * s * (s * maha.gather(1, ref)[:, 0]), 0.0)
        return torch.where(split[:, None], rel, near), base

    def _log_joint_masked(
        self, x: torch.Tensor, labels: Optional[torch.Tensor]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_component_log_joint` with components outside class ``labels`` (checked) set to
        -inf (None: all kept)."""
        return self._component_log_joint(x, None if labels is None else self._member[labels])

    def log_prob(self, x: torch.Tensor, y: Label = None) -> torch.Tensor:
        """log p(x), or log p(x|y) = log sum_{k in y} w_k N_k(x) - log p(y): [N].

        With :meth:`class_log_posterior` and :attr:`class_weights` this is Bayes' rule in log form,
        log p(x|y) = log p(x) + log p(y|x) - log p(y) (Luo eq. 163-164 before the gradient).
        """
        x = self._check_x(x)
        labels = None if y is None else self._check_y(y, x.shape[0])
        lj, base = self._log_joint_masked(x, labels)
        out = torch.logsumexp(lj, dim=1) + base  # -inf only where log p(x) is below float64's range
        if labels is not None:
            out = out - torch.log(self.class_weights).to(out.dtype)[labels]
        return out.to(self.dtype)

    def score(self, x: torch.Tensor, y: Label = None) -> torch.Tensor:
        """grad_x log p(x) (or log p(x|y)) = sum_k r_k(x) Sigma_k^{-1} (mu_k - x): [N, D].

        r_k are the responsibilities of the components (within class y when y is given).
        """
        x = self._check_x(x)
        return self._score(x, None if y is None else self._check_y(y, x.shape[0]))

    def _score(self, x: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`score` of checked inputs."""
        if self._shared:
            return self._score_from(x, self._responsibilities(x, labels))
        z = self._solve(x)  # one solve for the log joints and the components' scores
        return self._score_from(x, self._responsibilities(x, labels, z), self._component_scores(z))

    def _shared_logits(self, x: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """With one covariance Sigma for all components: x^T Sigma^-1 mu_k - mu_k^T Sigma^-1 mu_k / 2
        + log w_k, [N, K] (-inf outside class ``labels`` when given). This is the log joint of
        component k less -x^T Sigma^-1 x / 2 and the normaliser, which every component of a row
        shares, so its softmax gives the responsibilities: one product instead of a distance per
        component, and finite wherever x is, however far from the data."""
        lj = torch.addmm(self._lin_const, x.to(self._prec_mu.dtype), self._prec_mu.T)
        return lj if labels is None else lj.masked_fill(~self._member[labels], float("-inf"))

    def _shared_responsibilities(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(r_k(x) within class ``labels``, r_k(x)) of a shared-covariance mixture, from one product."""
        lj = self._shared_logits(x, None)
        lj_y = lj.masked_fill(~self._member[labels], float("-inf"))
        return tuple(torch.softmax(v, dim=1).to(self.dtype) for v in (lj_y, lj))

    def _responsibilities(
        self, x: torch.Tensor, labels: Optional[torch.Tensor], z: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """r_k(x), within class ``labels`` when given: [N, K]. ``z``: :meth:`_solve` of x, if
        computed already (a covariance per component)."""
        if self._shared:
            lj = self._shared_logits(x, labels)
        else:
            keep = None if labels is None else self._member[labels]
            lj = self._component_log_joint(x, keep, z)[0]
        return torch.softmax(lj, dim=1).to(self.dtype)

    def _scores_with_and_without(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(score(x, labels), score(x)) of checked inputs, sharing the work the two have in common:
        the log joints where the covariance is shared, the components' scores where it is not."""
        if self._shared:
            resp_y, resp = self._shared_responsibilities(x, labels)
            return self._score_from(x, resp_y), self._score_from(x, resp)
        resp_y, resp, comp = self._unshared_parts(x, labels)
        return self._score_from(x, resp_y, comp), self._score_from(x, resp, comp)

    def _unshared_parts(
        self, x: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(r_k(x) within class ``labels``, r_k(x), :meth:`_component_scores`) of a mixture with a
        covariance per component, from one triangular solve."""
        z = self._solve(x)
        resp_y, resp = self._responsibilities(x, labels, z), self._responsibilities(x, None, z)
        return resp_y, resp, self._component_scores(z)

    def _component_scores(self, z: torch.Tensor) -> torch.Tensor:
        """Sigma_k^-1 (mu_k - x) = -L_k^-T z_k for every component (Sigma_k = L_k L_k^T, z from
        :meth:`_solve` of x): [N, K, D]. A second triangular solve, half the work of a product by
        Sigma_k^-1."""
        lt = self._chol.transpose(1, 2)
        return -torch.linalg.solve_triangular(lt, z.permute(1, 2, 0), upper=True).permute(2, 0, 1)

    def _score_from(
        self, x: torch.Tensor, resp: torch.Tensor, comp: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """sum_k r_k Sigma_k^-1 (mu_k - x); with one Sigma, sum_k r_k Sigma^-1 mu_k - Sigma^-1 x
        (the responsibilities sum to 1). ``comp``: :meth:`_component_scores`, needed only with a
        covariance per component."""
        if self._shared:
            prec_mu = self._prec_mu.to(self.dtype)
            return resp @ prec_mu - x @ self._prec[0]  # Sigma^-1 is symmetric
        return (resp[..., None] * comp).sum(1)

    def class_log_posterior(self, x: torch.Tensor) -> torch.Tensor:
        """log p(y|x) for every class: [N, C] (Bayes' rule over the components).

        The classifier term of Bayes' rule in log form, log p(x|y) = log p(x) + log p(y|x) - log p(y)
        (Luo eq. 163-164); its gradient is the classifier gradient of eq. 165.
        """
        x = self._check_x(x)
        # [N, K], up to a shift per row
        lj = self._shared_logits(x, None) if self._shared else self._component_log_joint(x)[0]
        # shifted by the row's largest first: far from the data (|lj| ~ 1e40) the log of the
        # number of components would vanish in the rounding of lj itself
        lj = lj - lj.amax(dim=1, keepdim=True)
        per_class = torch.logsumexp(
            lj[:, None, :].masked_fill(~self._member[None], float("-inf")), dim=2
        )
        return (per_class - torch.logsumexp(lj, dim=1, keepdim=True)).to(self.dtype)

    def classifier_grad(self, x: torch.Tensor, y: Label) -> torch.Tensor:
        """grad_x log p(y|x) = grad log p(x|y) - grad log p(x)  (Luo eq. 165 rearranged, as in eq. 167): [N, D]."""
        if y is None:
            raise TypeError(
                "y must be an int or an integer tensor of labels: classifier_grad needs a class"
            )
        x = self._check_x(x)
        return self._classifier_grad(x, self._check_y(y, x.shape[0]))

    def _classifier_grad(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self._shared:
            # sum_k (r_k(x|y) - r_k(x)) Sigma^-1 (mu_k - x) with the x part gone (the differences of
            # responsibilities sum to 0): far away the two scores agree in every digit of x
            resp_y, resp = self._shared_responsibilities(x, labels)
            return ((resp_y - resp).to(self._prec_mu.dtype) @ self._prec_mu).to(self.dtype)
        resp_y, resp, comp = self._unshared_parts(x, labels)
        return self._score_from(x, resp_y, comp) - self._score_from(x, resp, comp)

    # ---- the forward process -------------------------------------------------------------------
    def diffuse(self, alpha_bar) -> "GaussianMixture":
        """The law of x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps: again a mixture,
        with means sqrt(alpha_bar) mu_k and covariances alpha_bar Sigma_k + (1 - alpha_bar) I.

        Weights and labels are kept: noise never touches the label, so the class shares p(y) are the
        same at every t, and grad log p(y) = 0 (the last term of Luo eq. 164)."""
        if isinstance(alpha_bar, torch.Tensor) and alpha_bar.numel() == 1:
            alpha_bar = alpha_bar.item()
        a = check_real(alpha_bar, "alpha_bar", low=0, high=1, low_open=True)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        covs = a * self.covs + (1 - a) * eye
        # a diffused valid mixture is valid (alpha_bar Sigma + (1 - alpha_bar) I is positive
        # definite): no checks, nothing read back from the device
        out = GaussianMixture.__new__(GaussianMixture)
        out._set(
            math.sqrt(a) * self.means,
            covs,
            self.weights,
            self.labels,
            torch.linalg.cholesky_ex(covs)[0],
            self._member,
            math.sqrt(a) * self._mu_max,
            self._shared,  # a Sigma + (1 - a) I: equal where the Sigma are
        )
        return out

    def widened(self, factor: float) -> "GaussianMixture":
        """The same mixture with every covariance multiplied by ``factor`` (means, weights and
        labels kept): chapter 8's stand-in for a weaker model of the same data, whose prediction
        autoguidance subtracts."""
        factor = check_real(factor, "factor", low=0, low_open=True)
        return GaussianMixture(self.means, factor * self.covs, self.weights, self.labels)

    def flow_marginal(self, t) -> "GaussianMixture":
        """The law of x_t = (1 - t) x_0 + t eps on chapter 11's straight path, t in [0, 1]: again a
        mixture, with means (1 - t) mu_k and covariances (1 - t)^2 Sigma_k + t^2 I."""
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            t = t.item()
        t = check_real(t, "t", low=0, high=1)
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return GaussianMixture(
            (1 - t) * self.means, (1 - t) ** 2 * self.covs + t**2 * eye, self.weights, self.labels
        )

    # ---- sampling -------------------------------------------------------------------------------
    def sample(self, n: int, y: Label = None, generator: Optional[torch.Generator] = None):
        """Draw n points from p(x), or from p(x|y): returns (x [n, D], y [n])."""
        n = check_int(n, "n", low=0)
        check_generator(generator)
        dev = self.device if generator is None else generator.device
        if y is None:
            probs = self.weights.expand(n, -1)
        else:
            y = self._check_y(y, n)
            probs = self._member[y] * self.weights
        k = torch.multinomial(
            probs.to(dev, torch.float64), 1, replacement=True, generator=generator
        )[:, 0]
        z = torch.randn(n, self.dim, generator=generator, device=dev, dtype=self.dtype).to(
            self.device
        )
        k = k.to(self.device)
        x = self.means[k] + torch.einsum("nij,nj->ni", self._chol[k], z)
        return x, self.labels[k]


def _exact_fn(mixture: GaussianMixture, schedule: Schedule, y: Label, value, need_y: str = ""):
    """``fn(x_t, t)`` = ``value(diffused mixture, alpha_bar_t, x, labels)`` at each step of t;
    ``need_y`` names what needs a class, where y may not be None.

    Checks the mixture, schedule and labels once, here. Inside a sampling run the step comes from
    the sampler (:func:`~diffcourse.checks.known_step`) and nothing is read back from the device;
    called directly, t is read to find its distinct steps."""
    check_mixture(mixture)
    check_schedule(schedule)
    if y is None and need_y:
        raise TypeError(f"y must be an int or an integer tensor of labels: {need_y} needs a class")
    if isinstance(y, torch.Tensor) and y.ndim == 0:
        y = check_labels(
            y, 1, mixture.num_classes, mixture.device, allow_int=True
        ).item()  # one class for all
    if isinstance(y, torch.Tensor):
        if y.ndim != 1:
            raise ValueError(
                f"y must be an int or a 1-D tensor of labels, got shape {tuple(y.shape)}"
            )
        y = check_labels(y, y.shape[0], mixture.num_classes, mixture.device, allow_int=True)
    elif y is not None:
        check_labels(y, 1, mixture.num_classes, mixture.device, allow_int=True)
    alpha_bar = schedule.alpha_bar.tolist()

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_tensor(
            x_t,
            "x_t",
            floating=True,
            shape=(None, mixture.dim),
            device=mixture.device,
            owner="the mixture",
        )
        n = x_t.shape[0]
        check_steps(t, n, schedule.T)
        if isinstance(y, torch.Tensor) and y.shape != (n,):
            raise ValueError(f"y has {y.shape[0]} labels but x_t has {n} rows")
        labels = (
            y
            if y is None or isinstance(y, torch.Tensor)
            else torch.full((n,), y, device=mixture.device)
        )
        x = x_t.to(mixture.dtype)
        step = known_step(t)
        steps = [step] if step is not None else read_values(torch.unique(t))
        if len(steps) <= 1:  # a sampler's call: one step for the whole batch (or no rows)
            a = alpha_bar[steps[0] if steps else 0]
            return value(mixture.diffuse(a), a, x, labels).to(x_t.dtype)
        out = None  # its shape is value's: [N, dim] for a noise prediction, [N] for a ratio
        for step in steps:
            idx = (t == step).nonzero()[:, 0]
            a = alpha_bar[step]
            v = value(mixture.diffuse(a), a, x[idx], None if labels is None else labels[idx])
            out = x.new_empty((n, *v.shape[1:])) if out is None else out
            out[idx] = v
        return out.to(x_t.dtype)

    return fn


def exact_eps_fn(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: Label = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The perfect noise predictor eps*(x_t, t) = -sqrt(1 - alpha_bar_t) grad log p_t(x_t [| y]).

    Returns a callable with the samplers' signature ``eps_fn(x_t, t)`` (t a LongTensor of 0-based
    steps), so a lab can swap a learned network for the exact answer in one line.
    """
    return _exact_fn(mixture, schedule, y, lambda m, a, x, lab: score_to_eps(m._score(x, lab), a))


def exact_classifier_grad_fn(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: Label,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact classifier gradient grad log p_t(y | x_t) as a callable ``grad_fn(x_t, t)``: the
    counterpart of a learned noise-aware classifier's gradient (Luo eq. 165-166)."""
    return _exact_fn(
        mixture,
        schedule,
        y,
        lambda m, a, x, lab: m._classifier_grad(x, lab),
        "the classifier gradient",
    )


def exact_cfg_eps_fn(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: Label,
    gamma: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance (Luo eq. 170) with exact scores: ``classifier_free_eps_fn`` of the
    exact conditional and unconditional noise predictors,
    gamma eps*(x_t, t, y) + (1 - gamma) eps*(x_t, t). What a perfectly trained CFG network would do."""
    if y is None:
        raise TypeError("y must be an int or an integer tensor of labels, got NoneType")
    if _check_gamma(gamma) in (0.0, 1.0) or not isinstance(mixture, GaussianMixture):
        return classifier_free_eps_fn(
            exact_eps_fn(mixture, schedule, y), exact_eps_fn(mixture, schedule), gamma
        )

    def value(m: GaussianMixture, a: float, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # both branches from one diffused mixture and one pass over the components
        cond, uncond = m._scores_with_and_without(x, labels)
        return classifier_free_guidance(score_to_eps(cond, a), score_to_eps(uncond, a), gamma)

    return _exact_fn(mixture, schedule, y, value, "guidance")


# ---- the tilted law of guidance (chapter 6) --------------------------------------------------------------


def tilted_log_prob(
    mixture: GaussianMixture, x: torch.Tensor, y: int, gamma: float
) -> torch.Tensor:
    """Unnormalised log of p(x|y)^gamma p(x)^(1 - gamma), the law eq. 170 would sample if guidance
    commuted with noise: gamma log p(x|y) + (1 - gamma) log p(x), equal to log p(x) p(y|x)^gamma up
    to a constant. For gamma >= 0 it is normalisable, since p(y|x) <= 1."""
    check_mixture(mixture)
    gamma = check_real(gamma, "gamma", low=0)
    if y is None:  # log p(x | None) would be log p(x): the tilt would silently vanish
        raise TypeError("y must be a class label (an int or a tensor of labels), got None")
    return gamma * mixture.log_prob(x, y) + (1 - gamma) * mixture.log_prob(x)


def grid_sample(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    n: int,
    low: float,
    high: float,
    cells: int = 600,
    generator: Optional[torch.Generator] = None,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> torch.Tensor:
    """n draws from the 2-D law with unnormalised ``log_density`` on the square [low, high]^2.

    The square is cut into cells x cells equal cells; a cell is picked with probability proportional
    to the density at its centre (the midpoint rule), and the point placed uniformly inside it. Exact
    up to the grid: the law must have negligible mass outside the square, and the cells must be small
    against its features (the width of the square over ``cells``; 600 cells on a square of side 8 give
    cells of 0.013). The uniform jitter adds a variance of width^2 / 12 per coordinate.
    """
    check_callable(log_density, "log_density")
    n = check_int(n, "n", low=1)
    low = check_real(low, "low")
    high = check_real(high, "high", low=low, low_open=True)
    cells = check_int(cells, "cells", low=2)
    check_generator(generator)
    device = (
        torch.device(device)
        if device is not None
        else (generator.device if generator is not None else torch.device("cpu"))
    )
    width = (high - low) / cells
    centres = low + width * (torch.arange(cells, dtype=dtype, device=device) + 0.5)
    gx, gy = torch.meshgrid(centres, centres, indexing="xy")
    logp = log_density(torch.stack([gx.flatten(), gy.flatten()], 1)).to(device=device, dtype=dtype)
    if logp.shape != (cells * cells,):
        raise ValueError(
            f"log_density must return one value per point, got shape {tuple(logp.shape)}"
        )
    if logp.isnan().any() or (logp == math.inf).any():  # softmax of them fails in multinomial
        raise ValueError("log_density must be finite or -inf on the grid, got NaN or +inf")
    if not torch.isfinite(logp).any():
        raise ValueError("log_density is -inf everywhere on the grid")
    # the mass left on the border row tells whether the square was big enough
    probs = torch.softmax(logp, 0)
    border = probs.reshape(cells, cells)
    edge = border[0].sum() + border[-1].sum() + border[:, 0].sum() + border[:, -1].sum()
    if edge > 1e-6:
        raise ValueError(
            f"the law has mass {edge.item():.1e} on the border of [{low}, {high}]^2: widen the square"
        )
    idx = torch.multinomial(probs, n, replacement=True, generator=generator)
    jitter = torch.rand(n, 2, generator=generator, dtype=dtype, device=device) - 0.5
    return torch.stack([gx.flatten()[idx], gy.flatten()[idx]], 1) + width * jitter


def sample_tilted(
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    n: int,
    generator: Optional[torch.Generator] = None,
    cells: int = 600,
    margin: float = 6.0,
) -> torch.Tensor:
    """Draws from the tilted law p(x|y)^gamma p(x)^(1-gamma) / Z of a 2-D mixture, by
    :func:`grid_sample` on a square that covers every component's mean by ``margin`` of its largest
    standard deviation. Returned in the mixture's dtype and on its device; drawn on the generator's device,
    so a CPU generator serves a mixture on a GPU (as :func:`~diffcourse.metrics.distance_to_exact` needs)."""
    if check_mixture(mixture).dim != 2:
        raise ValueError(f"sample_tilted works on 2-D mixtures, got dim={mixture.dim}")
    y = int(mixture._check_y(y, 1)[0])
    log_prob = lambda pts: tilted_log_prob(mixture, pts, y, gamma)  # noqa: E731
    return _grid_draws(log_prob, [mixture], n, generator, cells, margin)


def _grid_draws(
    log_prob: Callable[[torch.Tensor], torch.Tensor],
    mixtures: Sequence[GaussianMixture],
    n: int,
    generator: Optional[torch.Generator],
    cells: int,
    margin: float,
) -> torch.Tensor:
    """n draws of the normalised ``log_prob`` of 2-D points by :func:`grid_sample`, on a square that
    covers every component's mean of ``mixtures`` (and the origin) by ``margin`` of the largest
    standard deviation among them. The draws are made on the generator's device (as in
    GaussianMixture.sample), the density on the first mixture's, and returned in its dtype and on
    its device: a CPU generator serves a mixture on a GPU."""
    check_generator(generator)
    margin = check_real(margin, "margin", low=0, low_open=True)
    first = mixtures[0]
    reach = margin * max(
        torch.linalg.eigvalsh(m.covs.double()).max().sqrt().item() for m in mixtures
    )
    low = min(min(m.means.min().item() for m in mixtures), 0.0) - reach
    high = max(max(m.means.max().item() for m in mixtures), 0.0) + reach
    device = generator.device if generator is not None else first.device
    x = grid_sample(
        lambda pts: log_prob(pts.to(first.device, first.dtype)),
        n,
        low,
        high,
        cells,
        generator,
        dtype=torch.float64,
        device=device,
    )
    return x.to(first.device, first.dtype)


# ---- composed conditions (chapter 10) ---------------------------------------------------------------------

Condition = Tuple[GaussianMixture, Label]


def _check_condition(cond, name: str) -> Tuple[GaussianMixture, Label]:
    if (
        not isinstance(cond, (tuple, list))
        or len(cond) != 2
        or not isinstance(cond[0], GaussianMixture)
    ):
        raise TypeError(f"{name} must be a (GaussianMixture, y) pair, y an int or None")
    mixture, y = cond
    if y is not None:
        mixture._check_y(y, 1)
    return mixture, y


def _check_composed(uncond, terms) -> Tuple[Condition, list]:
    uncond = _check_condition(uncond, "uncond")
    if isinstance(terms, (str, bytes)) or not hasattr(terms, "__iter__"):
        raise TypeError("terms must be a list of ((mixture, y), weight) pairs")
    out = []
    for i, term in enumerate(terms):
        if not isinstance(term, (tuple, list)) or len(term) != 2:
            raise TypeError(f"terms[{i}] must be a ((mixture, y), weight) pair")
        cond, w = (
            _check_condition(term[0], f"terms[{i}] condition"),
            check_real(term[1], f"terms[{i}] weight"),
        )
        if cond[0].dim != uncond[0].dim:
            raise ValueError(
                f"terms[{i}]: the mixture has dim {cond[0].dim}, uncond's {uncond[0].dim}"
            )
        out.append((cond, w))
    if not out:
        raise ValueError("terms must hold at least one ((mixture, y), weight) pair")
    return uncond, out


def composed_log_prob(
    x: torch.Tensor, uncond: Condition, terms: Sequence[Tuple[Condition, float]]
) -> torch.Tensor:
    """Unnormalised log of the law whose score :func:`~diffcourse.guidance.composed_eps_fn` gives at
    t = 0: log p_u(x) + sum_i w_i (log p_i(x) - log p_u(x)), that is
    p_u(x) prod_i (p_i(x) / p_u(x))^{w_i}. A condition is a pair ``(mixture, y)``: p(x|y) of that
    mixture's labelling, or p(x) when y is None. With one term (p(x|y+), gamma) over p_u = p(x|y-)
    it is the tilted law of a negative prompt, p(x|y+)^gamma p(x|y-)^(1 - gamma); over p_u = p(x),
    chapter 6's :func:`tilted_log_prob`. [N]"""
    (mix_u, y_u), terms = _check_composed(uncond, terms)
    log_u = mix_u.log_prob(x, y_u)
    out = log_u
    for (mix, y), w in terms:
        out = out + w * (mix.log_prob(x, y) - log_u)
    return out


def sample_composed(
    uncond: Condition,
    terms: Sequence[Tuple[Condition, float]],
    n: int,
    generator: Optional[torch.Generator] = None,
    cells: int = 600,
    margin: float = 6.0,
) -> torch.Tensor:
    """n draws from the normalised :func:`composed_log_prob` of 2-D mixtures, by :func:`grid_sample`
    on a square covering every component's mean by ``margin`` of the largest standard deviation, as
    :func:`sample_tilted` does. The law must be normalisable (it is when every weight is >= 0 and
    they sum to at most one; with equal covariances it is for any finite weights); :func:`grid_sample`
    refuses a square whose border carries mass."""
    (mix_u, _), checked = _check_composed(uncond, terms)
    mixtures = [mix_u] + [c[0] for c, _ in checked]
    if mix_u.dim != 2:
        raise ValueError(f"sample_composed works on 2-D mixtures, got dim={mix_u.dim}")
    log_prob = lambda pts: composed_log_prob(pts, uncond, terms)  # noqa: E731
    return _grid_draws(log_prob, mixtures, n, generator, cells, margin)


# ---- the rectified-flow path (chapter 11) ------------------------------------------------------------------


def exact_velocity_fn(
    mixture: GaussianMixture,
    y: Label = None,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The exact velocity v*(x_t, t) = E[eps - x_0 | x_t] (or E[eps - x_0 | x_t, y]) on the
    rectified-flow path x_t = (1 - t) x_0 + t eps, t in [0, 1], t = 1 the noise (Liu et al. 2023;
    Lipman et al. 2023): the minimiser of the flow-matching loss, as a callable ``v(x_t, t)`` with
    ``t`` a float tensor [N].

    Given component k, x_0 ~ N(mu_k, Sigma_k) and x_t are jointly Gaussian: x_t ~ N((1 - t) mu_k, C_k),
    C_k = (1 - t)^2 Sigma_k + t^2 I, Cov(x_0, x_t) = (1 - t) Sigma_k, Cov(eps, x_t) = t I, so
    E[eps - x_0 | x_t, k] = (t I - (1 - t) Sigma_k) C_k^{-1} (x_t - (1 - t) mu_k) - mu_k; v* averages
    these with the responsibilities p(k | x_t [, y]). In the eigenbasis of Sigma_k every matrix is
    diagonal, with variances (1 - t)^2 lambda + t^2 > 0 at every t in [0, 1]: v* is finite at both
    ends, v*(x, 0) = -x and v*(x, 1) = x - E[x_0 (| y)].
    """
    check_mixture(mixture)._check_label(y)
    lam, basis = torch.linalg.eigh(mixture.covs)  # [K, D], [K, D, D]
    log_w = torch.log(mixture.weights)

    def velocity(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_tensor(
            x_t,
            "x_t",
            floating=True,
            shape=(None, mixture.dim),
            device=mixture.device,
            owner="the mixture",
        )
        x = x_t.to(mixture.dtype)  # computed in the mixture's dtype, returned in x_t's
        s = check_times(t, x.shape[0]).to(x.device, x.dtype)[:, None, None]  # [N, 1, 1]
        var = (1 - s) ** 2 * lam[None] + s**2  # [N, K, D]
        z = torch.einsum("kdj,nkd->nkj", basis, x[:, None, :] - (1 - s) * mixture.means[None])
        log_joint = log_w - 0.5 * (torch.log(2 * math.pi * var) + z**2 / var).sum(-1)  # [N, K]
        if y is not None:
            log_joint = log_joint.masked_fill(
                ~mixture._member[mixture._check_y(y, x.shape[0])], float("-inf")
            )
        per_component = (
            torch.einsum("kdj,nkj->nkd", basis, (s - (1 - s) * lam[None]) / var * z)
            - mixture.means[None]
        )
        return (torch.softmax(log_joint, dim=1)[..., None] * per_component).sum(1).to(x_t.dtype)

    return velocity


def exact_cfg_velocity_fn(
    mixture: GaussianMixture,
    y: Label,
    gamma: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier-free guidance (Luo eq. 170) on exact velocities (chapter 11):
    ``flow.velocity_cfg_fn`` of :func:`exact_velocity_fn` with and without y, the velocity of
    :func:`exact_cfg_eps_fn`'s guided score at every t. What a perfectly trained flow model guided
    by eq. 170 would follow."""
    from .flow import velocity_cfg_fn

    if y is None:
        raise TypeError("y must be an int or an integer tensor of labels, got NoneType")
    return velocity_cfg_fn(exact_velocity_fn(mixture, y), exact_velocity_fn(mixture), gamma)


# ---- chapter 12: tilted laws in any dimension, and p_t(y | x_t) as a callable ----------------------------


def _rejection_plan(mixture: GaussianMixture, y: int, gamma: float, n: int) -> tuple:
    """The checked label, the power of p(y|x) that keeps a proposal, and the proposal's class
    (None: from p(x)) of :func:`sample_tilted_rejection`."""
    gamma = check_real(gamma, "gamma", low=0)
    n = check_int(n, "n", low=1)
    label = int(check_mixture(mixture)._check_y(y, 1)[0])
    return (label, gamma - 1, label) if gamma >= 1 else (label, gamma, None)


def sample_tilted_rejection(
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    n: int,
    generator: Optional[torch.Generator] = None,
    min_acceptance: float = 1e-3,
) -> torch.Tensor:
    """Exact draws from the tilted law p(x|y)^gamma p(x)^(1-gamma) / Z in any dimension, by rejection.

    By Bayes' rule the tilted density is proportional to p(x|y) p(y|x)^(gamma - 1), and to
    p(x) p(y|x)^gamma. For gamma >= 1 propose from p(x|y) and accept with probability
    p(y|x)^(gamma - 1); for gamma < 1 propose from p(x) and accept with probability p(y|x)^gamma.
    Both acceptance probabilities are at most 1 because p(y|x) <= 1, so every accepted point is an
    exact draw (no grid, no chain, no duplicates). The cost is 1 / acceptance proposals per draw;
    where the acceptance rate falls below ``min_acceptance`` a ValueError says so. Draws are made on the
    generator's device and returned on the mixture's.
    """
    label, power, proposal_y = _rejection_plan(mixture, y, gamma, n)
    check_real(min_acceptance, "min_acceptance", low=0, low_open=True, high=1)
    check_generator(generator)
    dev = generator.device if generator is not None else mixture.device
    kept, total, proposed = [], 0, 0
    batch = n
    while total < n:
        x, _ = mixture.sample(batch, proposal_y, generator=generator)
        log_accept = power * mixture.class_log_posterior(x)[:, label]
        u = torch.rand(batch, generator=generator, device=dev, dtype=torch.float64).to(
            mixture.device
        )
        keep = torch.log(u) < log_accept.double()
        kept.append(x[keep])
        total, proposed = total + int(keep.sum()), proposed + batch
        rate = total / proposed
        if rate < min_acceptance:
            raise ValueError(
                f"acceptance rate {rate:.1e} is below min_acceptance={min_acceptance}: the tilted "
                f"law of gamma={gamma} is too far from its proposal for rejection sampling"
            )
        batch = min(max(int(1.2 * (n - total) / rate) + 16, 16), 50 * n)
    return torch.cat(kept)[:n]


def tilted_acceptance(
    mixture: GaussianMixture,
    y: int,
    gamma: float,
    n: int,
    generator: Optional[torch.Generator] = None,
) -> float:
    """The share of proposals :func:`sample_tilted_rejection` keeps, averaged over ``n`` proposals:
    E[p(y|x)^(gamma - 1)] over x ~ p(x|y) for gamma >= 1, E[p(y|x)^gamma] over x ~ p(x) below 1
    (chapter 12's exercise 12.1 shows it equals p(y)^(gamma - 1) Z_gamma, resp. p(y)^gamma Z_gamma).
    For gamma >= 1 it is close to 1 where the classes barely overlap (for 0 < gamma < 1, close to
    p(y) there); 1 exactly at gamma = 1."""
    label, power, proposal_y = _rejection_plan(mixture, y, gamma, n)
    x, _ = mixture.sample(n, proposal_y, generator=generator)
    return (power * mixture.class_log_posterior(x)[:, label].double()).exp().mean().item()


def exact_log_ratio_fn(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: Label,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """log p_t(y | x_t) - log p(y) = log p_t(x_t | y) - log p_t(x_t) as a callable ``ratio_fn(x_t, t)``
    returning [N]: how much more likely the class has become at x_t than it was a priori. Feedback
    guidance (``guidance.feedback_eps_fn``) sets its scale from it."""
    check_mixture(mixture)
    log_prior = torch.log(mixture.class_weights)

    def ratio(m: GaussianMixture, a: float, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return m.class_log_posterior(x).gather(1, labels[:, None])[:, 0] - log_prior[labels]

    return _exact_fn(mixture, schedule, y, ratio, "the log-ratio")


def class_mixture(mixture: GaussianMixture, y: int) -> GaussianMixture:
    """p(x|y) on its own: the components of class y, their weights renormalised, all labelled 0.

    Its score is ``mixture.score(x, y)`` at every noise level, at a fraction of the cost when the
    mixture has many classes (only class y's components are evaluated): the conditional branch of
    exact guidance in high dimension uses it."""
    label = int(check_mixture(mixture)._check_y(y, 1)[0])
    keep = mixture.labels == label
    return GaussianMixture(
        mixture.means[keep],
        mixture.covs[keep],
        mixture.weights[keep],
        torch.zeros(int(keep.sum()), dtype=torch.long, device=mixture.device),
    )


# ---- small exact laws and exact classifier guidance (chapters 5 and 6) -----------------------------


def gaussian(
    mean: float, var: float, dim: int = 1, dtype: torch.dtype = torch.float64
) -> GaussianMixture:
    """N(mean e_1, var I) in ``dim`` dimensions as a one-component, one-class mixture, so that every
    exact tool of the package (``diffuse``, ``score``, ``exact_eps_fn``) applies to one Gaussian.
    Chapter 6's hand calculation uses two of them."""
    mean = check_real(mean, "mean")
    var = check_real(var, "var", low=0, low_open=True)
    dim = check_int(dim, "dim", low=1)
    eye = torch.eye(dim, dtype=check_float_dtype(dtype, "dtype"))
    return GaussianMixture(mean * eye[:1], var * eye[None], eye[0, :1], torch.zeros(1).long())


def exact_cg_eps_fn(
    mixture: GaussianMixture,
    schedule: Schedule,
    y: Label,
    gamma: float,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Classifier guidance (Luo eq. 166) with exact scores: the exact unconditional noise predictor
    and the exact classifier gradient, eps*(x_t, t) - gamma sqrt(1 - alpha_bar_t) grad log p_t(y|x_t).
    By eqs. 167-170 it is :func:`exact_cfg_eps_fn` at the same gamma, up to float rounding."""
    from .guidance import classifier_guided_eps_fn

    if y is None:
        raise TypeError("y must be an int or an integer tensor of labels, got NoneType")
    return classifier_guided_eps_fn(
        exact_eps_fn(mixture, schedule),
        exact_classifier_grad_fn(mixture, schedule, y),
        schedule,
        gamma,
    )
