"""GaussianMixture against an independent computation: torch.distributions plus autograd, float64."""

import math

import pytest
import torch
from conftest import random_mixture
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from diffcourse.mixture import GaussianMixture, exact_eps_fn
from diffcourse.schedules import cosine_schedule
from diffcourse.targets import eps_to_score

RTOL = 1e-8


def reference(mix: GaussianMixture, keep=None) -> MixtureSameFamily:
    """The same mixture built from torch.distributions (optionally only components in ``keep``)."""
    keep = torch.ones(mix.num_components, dtype=torch.bool) if keep is None else keep
    return MixtureSameFamily(
        Categorical(probs=mix.weights[keep]),
        MultivariateNormal(mix.means[keep], covariance_matrix=mix.covs[keep]),
    )


def autograd_score(log_density, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(log_density(x).sum(), x)
    return g


def close(a, b, rtol=RTOL):
    scale = b.abs().max().clamp(min=1e-300)
    return ((a - b).abs().max() / scale).item() < rtol


CASES = [
    (d, cpc, a, shared)
    for d in (2, 3, 4)
    for cpc in ((2, 3), (1, 2, 2))
    for a in (1.0, 0.7, 0.2, 0.01)
    for shared in (False, True)
]


@pytest.mark.parametrize("dim,cpc,alpha_bar,shared", CASES)
def test_against_torch_distributions(dim, cpc, alpha_bar, shared):
    """Both paths: one covariance per component, and one shared by all (then the
    responsibilities come from x^T Sigma^-1 mu_k, not from the squared distances)."""
    mix = random_mixture(dim, cpc, seed=dim, shared=shared).diffuse(alpha_bar)
    assert mix._shared == shared
    x = 2.5 * torch.randn(64, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ref = reference(mix)
    assert close(mix.log_prob(x), ref.log_prob(x))
    assert close(mix.score(x), autograd_score(ref.log_prob, x))
    log_px = ref.log_prob(x)
    post = []
    for c in range(mix.num_classes):
        ref_c = reference(mix, mix.labels == c)
        assert close(mix.log_prob(x, c), ref_c.log_prob(x))
        assert close(mix.score(x, c), autograd_score(ref_c.log_prob, x))
        log_py = math.log(mix.weights[mix.labels == c].sum())
        post.append(ref_c.log_prob(x) + log_py - log_px)
        # the classifier gradient: autograd of log p(y|x) from the reference densities
        grad_ref = autograd_score(
            lambda z, r=ref_c, w=log_py: r.log_prob(z) + w - ref.log_prob(z), x
        )
        assert close(mix.classifier_grad(x, c), grad_ref)
    assert close(mix.class_log_posterior(x), torch.stack(post, 1))


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.05])
def test_bayes_rule_for_scores_eq165(alpha_bar):
    """grad log p(x|y) = grad log p(x) + grad log p(y|x), each side computed independently."""
    mix = random_mixture(3, (2, 2, 1), seed=7).diffuse(alpha_bar)
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.randint(0, 3, (50,), generator=torch.Generator().manual_seed(3))
    post = lambda z: mix.class_log_posterior(z).gather(1, y[:, None])[:, 0]
    lhs = mix.score(x, y)
    rhs = mix.score(x) + autograd_score(post, x)
    assert close(lhs, rhs)


def test_diffuse_moments():
    mix = random_mixture(2, seed=3)
    a = 0.3
    d = mix.diffuse(a)
    assert torch.allclose(d.means, math.sqrt(a) * mix.means, rtol=0, atol=1e-15)
    assert torch.allclose(
        d.covs, a * mix.covs + (1 - a) * torch.eye(2, dtype=torch.float64), rtol=0, atol=1e-15
    )
    assert torch.equal(d.labels, mix.labels) and torch.allclose(d.weights, mix.weights)
    assert torch.equal(mix.diffuse(1.0).covs, mix.covs)


def test_widened_scales_only_the_covariances():
    mix = random_mixture(2, seed=3)
    wide = mix.widened(2.0)
    assert torch.equal(wide.covs, 2.0 * mix.covs) and torch.equal(wide.means, mix.means)
    assert torch.equal(wide.labels, mix.labels) and torch.equal(wide.weights, mix.weights)
    assert torch.isfinite(wide.log_prob(torch.zeros(1, 2, dtype=torch.float64))).all()
    # one Gaussian, covariance doubled: its peak lower by a factor 2^(d/2) = 2 in 2-D
    one = GaussianMixture(mix.means[:1], mix.covs[:1], torch.ones(1, dtype=torch.float64), [0])
    peak = one.log_prob(one.means) - one.widened(2.0).log_prob(one.means)
    assert torch.allclose(peak, torch.tensor([math.log(2.0)], dtype=torch.float64))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="^factor"):
            mix.widened(bad)


def test_sample_matches_class_means():
    mix = random_mixture(2, (2, 3), seed=4)
    n = 40000
    for c in range(mix.num_classes):
        x, y = mix.sample(n, c, generator=torch.Generator().manual_seed(c))
        assert (y == c).all()
        keep = mix.labels == c
        w = mix.weights[keep] / mix.weights[keep].sum()
        mean = (w[:, None] * mix.means[keep]).sum(0)
        # the class's covariance: mixture of covariances plus spread of the means
        cov = (
            w[:, None, None]
            * (
                mix.covs[keep]
                + torch.einsum("ki,kj->kij", mix.means[keep] - mean, mix.means[keep] - mean)
            )
        ).sum(0)
        se = (torch.diagonal(cov) / n).sqrt()
        assert ((x.mean(0) - mean).abs() < 4 * se).all()
        assert torch.allclose(torch.cov(x.T), cov, rtol=0.05, atol=0.05)


def test_sample_unconditional_class_shares():
    mix = random_mixture(2, (2, 3), seed=5)
    _, y = mix.sample(40000, generator=torch.Generator().manual_seed(0))
    share = torch.bincount(y, minlength=2).double() / 40000
    se = (mix.class_weights * (1 - mix.class_weights) / 40000).sqrt()
    assert ((share - mix.class_weights).abs() < 4 * se).all()


def test_sample_is_seeded():
    mix = random_mixture(2)
    a = mix.sample(100, generator=torch.Generator().manual_seed(9))
    b = mix.sample(100, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_float32_works():
    mix = random_mixture(2, dtype=torch.float32)
    x = torch.randn(10, 2)
    assert mix.score(x).dtype == torch.float32
    assert torch.allclose(
        mix.score(x).double(), random_mixture(2).score(x.double()), rtol=1e-4, atol=1e-4
    )


def test_exact_eps_fn_is_the_diffused_score():
    mix = random_mixture(2)
    sch = cosine_schedule(50)
    fn = exact_eps_fn(mix, sch)
    x = torch.randn(8, 2, dtype=torch.float64)
    t = torch.tensor([0, 0, 10, 10, 30, 30, 49, 49])
    eps = fn(x, t)
    for i in range(8):
        a = float(sch.alpha_bar[t[i]])
        assert close(eps_to_score(eps[i : i + 1], a), mix.diffuse(a).score(x[i : i + 1]))
    fn_y = exact_eps_fn(mix, sch, y=1)
    a = float(sch.alpha_bar[10])
    assert close(eps_to_score(fn_y(x, torch.full((8,), 10)), a), mix.diffuse(a).score(x, 1))


# ---- bad input --------------------------------------------------------------------------------
def test_bad_input_names_the_parameter(mix2):
    x = torch.randn(5, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="^x must have shape"):
        mix2.score(torch.randn(5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^x must have shape"):
        mix2.log_prob(torch.randn(5, dtype=torch.float64))
    with pytest.raises(TypeError, match="dtype"):
        mix2.score(x.float())
    with pytest.raises(ValueError, match="^y must lie in"):
        mix2.log_prob(x, 2)
    with pytest.raises(ValueError, match="^y must lie in"):
        mix2.score(x, torch.tensor([0, 1, 0, 1, -1]))
    with pytest.raises(ValueError, match="^y must be an int"):
        mix2.score(x, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="^y must be an int"):
        mix2.score(x, torch.tensor([0.0, 1, 0, 1, 0]))
    with pytest.raises(ValueError, match="^y must lie in"):
        mix2.sample(4, y=5)
    with pytest.raises(ValueError, match="^n must be an int"):
        mix2.sample(-1)
    for bad in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="alpha_bar"):
            mix2.diffuse(bad)


def test_bad_construction_names_the_parameter():
    m = torch.zeros(2, 2, dtype=torch.float64)
    c = torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(m, c, torch.tensor([1.0, -0.5], dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(m, c, torch.tensor([1.0], dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(m, c[:1], torch.ones(2, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="covs"):
        GaussianMixture(m, -c, torch.ones(2, dtype=torch.float64), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="labels"):
        GaussianMixture(m, c, torch.ones(2, dtype=torch.float64), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="labels"):
        GaussianMixture(m, c, torch.ones(2, dtype=torch.float64), torch.tensor([0]))
    with pytest.raises(ValueError, match="means"):
        GaussianMixture(torch.zeros(2, dtype=torch.float64), c, torch.ones(2), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="means"):
        GaussianMixture(torch.zeros(2, 2, dtype=torch.long), c, torch.ones(2), torch.tensor([0, 1]))


# ---- the tilted law (chapter 6) --------------------------------------------------------------------
from diffcourse.mixture import grid_sample, sample_tilted, tilted_log_prob  # noqa: E402


def _gauss_logpdf(x, m, var):
    return -0.5 * ((x - m) ** 2 / var).sum(1)


def test_grid_sample_tilts_gaussians_to_the_closed_form():
    """N(a, A)^gamma N(b, B)^(1-gamma) is Gaussian: precision gamma/A + (1-gamma)/B (diagonal here),
    mean = that precision's inverse times (gamma a/A + (1-gamma) b/B). gamma = 3 puts negative weight
    on the second law, as guidance does."""
    gamma = 3.0
    a, A = (
        torch.tensor([0.5, -0.3], dtype=torch.float64),
        torch.tensor([0.25, 0.16], dtype=torch.float64),
    )
    b, B = (
        torch.tensor([-0.5, 0.4], dtype=torch.float64),
        torch.tensor([2.25, 1.0], dtype=torch.float64),
    )
    prec = gamma / A + (1 - gamma) / B
    mean, var = (gamma * a / A + (1 - gamma) * b / B) / prec, 1 / prec
    n = 200000
    x = grid_sample(
        lambda p: gamma * _gauss_logpdf(p, a, A) + (1 - gamma) * _gauss_logpdf(p, b, B),
        n,
        -4.0,
        4.0,
        cells=600,
        generator=torch.Generator().manual_seed(0),
    )
    se = (var / n).sqrt()
    assert ((x.mean(0) - mean).abs() < 5 * se).all(), (x.mean(0), mean)
    assert torch.allclose(x.var(0), var, rtol=0.02), (x.var(0), var)


def test_sample_tilted_at_gamma_one_and_zero_is_the_mixture():
    mix = random_mixture(2, (2, 1), seed=6)
    n = 100000
    for gamma, y in ((1.0, 1), (0.0, None)):
        x = sample_tilted(mix, 1, gamma, n, generator=torch.Generator().manual_seed(1))
        ref, _ = mix.sample(n, y, generator=torch.Generator().manual_seed(2))
        assert torch.allclose(x.mean(0), ref.mean(0), atol=0.03), gamma
        assert torch.allclose(torch.cov(x.T), torch.cov(ref.T), atol=0.05), gamma
    x = torch.randn(7, 2, dtype=torch.float64)
    assert torch.allclose(
        tilted_log_prob(mix, x, 0, 2.5), 2.5 * mix.log_prob(x, 0) - 1.5 * mix.log_prob(x)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_sample_tilted_on_a_gpu_mixture_with_a_cpu_generator():
    """distance_to_exact passes a CPU generator whatever the mixture's device: the draws follow the
    generator, as GaussianMixture.sample's do, and come back on the mixture's device."""
    mix = random_mixture(2, (2, 1), seed=6)
    x_cpu = sample_tilted(mix, 1, 2.0, 500, generator=torch.Generator().manual_seed(3))
    x_gpu = sample_tilted(mix.to("cuda"), 1, 2.0, 500, generator=torch.Generator().manual_seed(3))
    assert x_gpu.device.type == "cuda" and x_gpu.dtype == mix.dtype
    assert torch.allclose(x_gpu.cpu(), x_cpu)


def test_tilted_bad_input():
    mix = random_mixture(2, (1, 1), seed=1)
    with pytest.raises(ValueError, match="gamma"):
        tilted_log_prob(mix, torch.zeros(3, 2, dtype=torch.float64), 0, -1.0)
    with pytest.raises(TypeError, match="^y must be a class label"):  # not log p(x), gamma lost
        tilted_log_prob(mix, torch.zeros(3, 2, dtype=torch.float64), None, 3.0)
    with pytest.raises(ValueError, match="^y must lie in"):
        sample_tilted(mix, 5, 2.0, 10)
    with pytest.raises(ValueError, match="dim"):
        sample_tilted(random_mixture(3, (1, 1), seed=1), 0, 2.0, 10)
    with pytest.raises(ValueError, match="border"):
        grid_sample(lambda p: torch.zeros(p.shape[0], dtype=p.dtype), 10, -1.0, 1.0)
    with pytest.raises(ValueError, match="^n must be an int"):
        grid_sample(lambda p: -p.pow(2).sum(1), 0, -5.0, 5.0)


# ---- chapter 12: tilted draws by rejection, class_mixture, the exact log ratio --------------------------

from diffcourse.mixture import (  # noqa: E402
    class_mixture,
    exact_log_ratio_fn,
    sample_tilted_rejection,
    tilted_acceptance,
)


@pytest.mark.parametrize("gamma", [0.5, 3.0])
def test_rejection_draws_match_the_grid_sampler(gamma):
    """Two independent exact samplers of the tilted law (a fine grid; rejection) agree in mean and
    covariance, for gamma above one (proposals from p(x|y)) and below (proposals from p(x))."""
    mix = random_mixture(2, (2, 1), seed=6)
    n = 60000
    grid = sample_tilted(mix, 1, gamma, n, generator=torch.Generator().manual_seed(1))
    rej = sample_tilted_rejection(mix, 1, gamma, n, generator=torch.Generator().manual_seed(2))
    assert rej.shape == (n, 2) and rej.dtype == mix.dtype
    se = (torch.cov(grid.T).diagonal() / n).sqrt()
    assert ((rej.mean(0) - grid.mean(0)).abs() < 6 * se).all(), (rej.mean(0), grid.mean(0))
    assert torch.allclose(torch.cov(rej.T), torch.cov(grid.T), rtol=0.04, atol=0.01)


def test_rejection_at_gamma_one_is_the_class_and_is_seeded():
    mix = random_mixture(3, (1, 2), seed=3)
    a = sample_tilted_rejection(mix, 0, 1.0, 500, generator=torch.Generator().manual_seed(5))
    b = sample_tilted_rejection(mix, 0, 1.0, 500, generator=torch.Generator().manual_seed(5))
    ref = mix.sample(500, 0, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b) and torch.equal(a, ref)  # every proposal is accepted at gamma = 1


def test_rejection_refuses_a_hopeless_acceptance_rate():
    means = torch.tensor([[0.0], [0.3]], dtype=torch.float64)
    mix = GaussianMixture(
        means,
        torch.ones(2, 1, 1, dtype=torch.float64),
        torch.tensor([1.0, 1.0], dtype=torch.float64),
        torch.tensor([0, 1]),
    )
    with pytest.raises(ValueError, match="acceptance"):
        sample_tilted_rejection(
            mix, 0, 60.0, 100, generator=torch.Generator().manual_seed(0), min_acceptance=0.05
        )
    with pytest.raises(ValueError, match="gamma"):
        sample_tilted_rejection(mix, 0, -1.0, 10)
    with pytest.raises(ValueError, match="^n must be an int"):
        sample_tilted_rejection(mix, 0, 2.0, 0)
    with pytest.raises(ValueError, match="^y must lie in"):
        sample_tilted_rejection(mix, 3, 2.0, 10)
    # found by fuzzing: a wrong type was a ValueError
    with pytest.raises(TypeError, match="^n must be an int"):
        sample_tilted_rejection(mix, 0, 2.0, 3.0)
    with pytest.raises(TypeError, match="^gamma must be a real number"):
        sample_tilted_rejection(mix, 0, "2", 3)
    with pytest.raises(TypeError, match="^min_acceptance"):
        sample_tilted_rejection(mix, 0, 2.0, 3, min_acceptance="0.1")
    with pytest.raises(ValueError, match="^min_acceptance"):
        sample_tilted_rejection(mix, 0, 2.0, 3, min_acceptance=0.0)


def test_tilted_acceptance_in_closed_form_and_by_quadrature():
    """Two classes with the same component: p(y|x) = p(y) everywhere, so the share kept is
    p(y)^(gamma - 1) above gamma = 1 and p(y)^gamma below. On overlapping 1-D classes it is
    exercise 12.1's p(y)^(gamma - 1) Z_gamma (p(y)^gamma Z_gamma below 1), Z_gamma the integral of
    p(x|y)^gamma p(x)^(1 - gamma) on a fine grid."""
    f64 = dict(dtype=torch.float64)
    same = GaussianMixture(
        torch.zeros(2, 1, **f64),
        torch.ones(2, 1, 1, **f64),
        torch.tensor([0.3, 0.7], **f64),
        torch.tensor([0, 1]),
    )
    for gamma, want in ((3.0, 0.3**2), (1.0, 1.0), (0.5, 0.3**0.5)):
        assert abs(tilted_acceptance(same, 0, gamma, 200) - want) < 1e-12, gamma
    mix = GaussianMixture(
        torch.tensor([[-1.0], [0.5], [1.5]], **f64),
        torch.ones(3, 1, 1, **f64),
        torch.tensor([0.5, 0.3, 0.2], **f64),
        torch.tensor([0, 1, 1]),
    )
    x = torch.linspace(-15, 15, 60001, **f64)[:, None]
    log_px, log_pxy = mix.log_prob(x), mix.log_prob(x, 1)
    for gamma in (3.0, 0.5):
        z = torch.trapezoid((gamma * log_pxy + (1 - gamma) * log_px).exp(), x[:, 0])
        want = (0.5 ** (gamma - 1 if gamma >= 1 else gamma) * z).item()
        share = tilted_acceptance(mix, 1, gamma, 400000, torch.Generator().manual_seed(0))
        assert 0.05 < want < 0.95 and abs(share - want) < 0.005, (gamma, share, want)
    for bad, match in (((0, -1.0, 10), "gamma"), ((0, 2.0, 0), "n"), ((5, 2.0, 10), "y")):
        with pytest.raises(ValueError, match=match):
            tilted_acceptance(mix, *bad)


def test_class_mixture_has_the_conditional_score_at_every_level():
    mix = random_mixture(3, (2, 3, 1), seed=4)
    s = cosine_schedule(50)
    x = torch.randn(30, 3, dtype=torch.float64)
    for y in range(3):
        sub = class_mixture(mix, y)
        assert sub.num_classes == 1 and sub.num_components == int((mix.labels == y).sum())
        for step in (0, 20, 49):
            t = torch.full((30,), step, dtype=torch.long)
            assert close(exact_eps_fn(sub, s)(x, t), exact_eps_fn(mix, s, y)(x, t), 1e-10)
        assert close(sub.log_prob(x), mix.log_prob(x, y), 1e-10)


def test_exact_log_ratio_is_the_class_posterior_over_the_prior():
    mix = random_mixture(2, (2, 1, 2), seed=8)
    s = cosine_schedule(50)
    x = torch.randn(25, 2, dtype=torch.float64)
    t = torch.randint(0, 50, (25,), generator=torch.Generator().manual_seed(0))
    got = exact_log_ratio_fn(mix, s, 2)(x, t)
    for i in range(25):
        law = mix.diffuse(float(s.alpha_bar[int(t[i])]))
        want = law.log_prob(x[i : i + 1], 2) - law.log_prob(
            x[i : i + 1]
        )  # Bayes: p_t(y|x)/p(y) = p_t(x|y)/p_t(x)
        assert abs(got[i].item() - want.item()) < 1e-10
    with pytest.raises(TypeError, match="^y must be"):
        exact_log_ratio_fn(mix, s, None)
    with pytest.raises(ValueError, match="^y must lie"):  # found by fuzzing: failed at the call
        exact_log_ratio_fn(mix, s, 5)


def test_exact_cfg_is_eq170_of_the_exact_predictors():
    from diffcourse.data import three_blobs
    from diffcourse.guidance import classifier_free_guidance
    from diffcourse.mixture import exact_cfg_eps_fn, exact_eps_fn
    from diffcourse.schedules import cosine_schedule

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y, t = torch.tensor([0, 1, 2, 0, 1, 2]), torch.full((6,), 20)
    cond, uncond = exact_eps_fn(mix, s, y)(x, t), exact_eps_fn(mix, s)(x, t)
    assert torch.equal(
        exact_cfg_eps_fn(mix, s, y, 2.5)(x, t), classifier_free_guidance(cond, uncond, 2.5)
    )
    # and eq. 170 written out, so that a slip in the shared helper cannot cancel
    torch.testing.assert_close(exact_cfg_eps_fn(mix, s, y, 2.5)(x, t), 2.5 * cond - 1.5 * uncond)
    assert torch.equal(exact_cfg_eps_fn(mix, s, 1, 1.0)(x, t), exact_eps_fn(mix, s, 1)(x, t))
    with pytest.raises(TypeError, match="^y must be an int"):
        exact_cfg_eps_fn(mix, s, None, 2.0)
    with pytest.raises(ValueError, match="gamma"):
        exact_cfg_eps_fn(mix, s, 0, -2.0)


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.05])
def test_bayes_rule_in_log_form_eq163_eq164(alpha_bar):
    """Luo eq. 163-164 on a mixture with unequal class shares and several components per class:
    log p(x|y) = log p(x) + log p(y|x) - log p(y) point by point; its gradient term by term, each
    by autograd of its own log term (grad log p(y) = 0); and p(y) unchanged by the noise."""
    base = random_mixture(3, (3, 1, 2), seed=5)
    mix = base.diffuse(alpha_bar)
    assert torch.equal(mix.class_weights, base.class_weights)
    assert (mix.class_weights.max() - mix.class_weights.min()).item() > 0.05
    x = 2.0 * torch.randn(60, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    y = torch.randint(0, 3, (60,), generator=torch.Generator().manual_seed(6))
    post = lambda z: mix.class_log_posterior(z).gather(1, y[:, None])[:, 0]  # noqa: E731
    log_py = mix.class_weights.log()[y]
    assert close(mix.log_prob(x) + post(x) - log_py, mix.log_prob(x, y), rtol=1e-12)
    lhs = autograd_score(lambda z: mix.log_prob(z, y), x)
    assert close(autograd_score(mix.log_prob, x) + autograd_score(post, x), lhs)


# ---- chapter 10: composed laws on two attributes ---------------------------------------------------------
from diffcourse.data import attribute_grid  # noqa: E402
from diffcourse.mixture import composed_log_prob, sample_composed  # noqa: E402


def _and(A):
    """position 0 AND colour 1 over p(x)."""
    return (A.joint, None), [((A.position, 0), 1.0), ((A.colour, 1), 1.0)]


@pytest.mark.parametrize("alpha_bar", [1.0, 0.5, 0.1])
def test_independent_attributes_compose_exactly_at_every_noise_level(alpha_bar):
    """rows: position on x1, colour on x2, p(x) = p(x1) p(x2), so p_t(x|a) p_t(x|b) / p_t(x) is p_t(x|a, b)
    at every t: the composed log density differs from the joint's by a constant. diagonal: it does not."""
    x = 3 * torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for colour, exact in (("rows", True), ("diagonal", False)):
        A = attribute_grid(colour=colour, dtype=torch.float64)
        A = type(A)(*(m.diffuse(alpha_bar) for m in A))
        uncond, terms = _and(A)
        gap = composed_log_prob(x, uncond, terms) - A.joint.log_prob(x, A.pair(0, 1))
        assert (gap.max() - gap.min() < 1e-9) == exact, (colour, gap.max() - gap.min())


def test_composed_log_prob_is_the_tilted_law_for_one_term():
    mix = random_mixture(2, (2, 1), seed=6)
    x = torch.randn(9, 2, dtype=torch.float64)
    assert torch.allclose(
        composed_log_prob(x, (mix, None), [((mix, 0), 2.5)]), tilted_log_prob(mix, x, 0, 2.5)
    )
    # a negative prompt: p(x|1)^gamma p(x|0)^(1 - gamma)
    neg = composed_log_prob(x, (mix, 0), [((mix, 1), 3.0)])
    assert torch.allclose(neg, 3.0 * mix.log_prob(x, 1) - 2.0 * mix.log_prob(x, 0))


def test_sample_composed_of_independent_attributes_is_the_joint_conditional():
    A = attribute_grid(dtype=torch.float64)
    n = 100000
    x = sample_composed(*_and(A), n, generator=torch.Generator().manual_seed(1))
    ref, _ = A.joint.sample(n, A.pair(0, 1), generator=torch.Generator().manual_seed(2))
    assert torch.allclose(x.mean(0), ref.mean(0), atol=0.01)
    assert torch.allclose(torch.cov(x.T), torch.cov(ref.T), atol=0.01)


def test_composed_bad_input():
    A = attribute_grid(dtype=torch.float64)
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match="uncond"):
        composed_log_prob(x, A.joint, [((A.position, 0), 1.0)])
    with pytest.raises(ValueError, match="^y must lie in"):
        composed_log_prob(x, (A.joint, None), [((A.position, 7), 1.0)])
    with pytest.raises(ValueError, match="terms\\[0\\] weight"):
        composed_log_prob(x, (A.joint, None), [((A.position, 0), float("inf"))])
    with pytest.raises(TypeError, match="terms\\[0\\] weight"):
        composed_log_prob(x, (A.joint, None), [((A.position, 0), None)])
    with pytest.raises(ValueError, match="terms"):
        composed_log_prob(x, (A.joint, None), [])
    with pytest.raises(ValueError, match="dim"):
        sample_composed(
            (random_mixture(3, (1, 1), seed=1), None),
            [((random_mixture(3, (1, 1), seed=1), 0), 1.0)],
            5,
        )


# ---- bad input (issue 17) --------------------------------------------------------------------------------
from diffcourse.data import three_blobs, two_moons  # noqa: E402


def test_a_mixture_of_nan_or_inf_means_or_half_precision_is_refused():
    base = three_blobs()
    for value in (math.nan, math.inf):
        means = base.means.clone()
        means[1, 0] = value
        with pytest.raises(ValueError, match="^means must be finite"):
            GaussianMixture(means, base.covs, base.weights, base.labels)
    for kw in (dict(radius=math.nan), dict(radius=math.inf), dict(std=math.nan)):
        with pytest.raises(ValueError, match=f"^{next(iter(kw))}"):
            three_blobs(**kw)
    for dtype in (torch.float16, torch.bfloat16):  # not "not positive definite"
        with pytest.raises(TypeError, match="^dtype must be torch.float32 or torch.float64"):
            three_blobs(dtype=dtype)
        with pytest.raises(TypeError, match="^dtype must be"):
            two_moons(dtype=dtype)
        with pytest.raises(TypeError, match="^dtype must be torch.float32"):  # .to's own dtype
            base.to(dtype=dtype)


def test_far_from_the_data_the_score_and_posterior_stay_finite_and_right():
    """At |x| ~ 1e20 the means are below the resolution of x - mu_k and the squared distances
    overflow float32 (log p(x) itself is below -1e40, -inf in float32); at 1e200 they overflow
    float64. The score, log p(y|x) and the classifier gradient are still finite and right: with the
    shared covariance of three_blobs (std 0.5) the nearest class in the direction of x takes all of
    p(y|x) (log p(y|x) differs between classes by 4 x . (mu_a - mu_b), huge), the score is
    -4 (x - mu_y) for that class y, and grad log p(y'|x) = 4 (mu_y' - mu_y)."""
    for dtype, big in ((torch.float32, 1e20), (torch.float64, 1e20), (torch.float64, 1e200)):
        mix = three_blobs(dtype=dtype)
        mu = mix.means
        x = big * torch.tensor([[0.1, 1.0], [-1.0, -0.2], [0.9, -0.5], [-0.3, 0.0]], dtype=dtype)
        nearest = (x @ mu.T).argmax(1)  # the class whose mean points most along x
        post = mix.class_log_posterior(x)
        assert torch.isfinite(post).all() and (post <= 0).all()
        torch.testing.assert_close(post.exp(), torch.eye(3, dtype=dtype)[nearest])
        score = mix.score(x)
        assert torch.isfinite(score).all()
        torch.testing.assert_close(score, -4 * (x - mu[nearest]), rtol=1e-6, atol=0.0)
        torch.testing.assert_close(mix.score(x, 1), -4 * (x - mu[1]), rtol=1e-6, atol=0.0)
        for y in range(3):  # O(1) answers from two scores of size 4 |x|
            grad = mix.classifier_grad(x, y)
            torch.testing.assert_close(grad, 4 * (mu[y] - mu[nearest]), rtol=1e-5, atol=1e-5)
        log_p = mix.log_prob(x)  # -2 |x|^2: -inf only where that is beyond the dtype's range
        assert (log_p < 0).all() and (
            torch.isfinite(log_p).all() == (big < 1e30 and dtype == torch.float64)
        )
    # components of different covariances: the broadest wins far away, and its own score is used
    mix = three_blobs(dtype=torch.float64)
    covs = torch.stack([torch.eye(2) * 0.25, torch.eye(2), torch.diag(torch.tensor([0.5, 2.0]))])
    wide = GaussianMixture(mix.means, covs.double(), torch.ones(3).double(), torch.arange(3))
    x = torch.tensor([[1e200, 5e199], [1e20, 5e19]], dtype=torch.float64)
    torch.testing.assert_close(wide.class_log_posterior(x).exp()[:, 1], torch.ones(2).double())
    torch.testing.assert_close(wide.score(x), -(x - mix.means[1]))
    torch.testing.assert_close(wide.classifier_grad(x, 0), -3 * x, rtol=1e-12, atol=0.0)
    mix = three_blobs()
    near = mix.sample(64, generator=torch.Generator().manual_seed(0))[0]
    exact = mix.to(dtype=torch.float64)  # near the data nothing changed: float64 agrees
    torch.testing.assert_close(mix.score(near), exact.score(near.double()).float())
    torch.testing.assert_close(
        mix.class_log_posterior(near), exact.class_log_posterior(near.double()).float()
    )


# ---- gaussian and exact classifier guidance (labs 5 and 6) -------------------------------------------
from diffcourse.mixture import exact_cfg_eps_fn, exact_cg_eps_fn, gaussian  # noqa: E402


def test_gaussian_is_one_component_with_the_closed_form_density():
    g = gaussian(1.5, 0.25, dim=2)
    x = torch.tensor([[0.0, 0.0], [1.5, 0.0], [1.0, -0.5]], dtype=torch.float64)
    mean = torch.tensor([1.5, 0.0], dtype=torch.float64)
    expected = -((x - mean) ** 2).sum(1) / (2 * 0.25) - math.log(2 * math.pi * 0.25)
    assert torch.allclose(g.log_prob(x), expected, atol=1e-12)
    assert torch.allclose(g.score(x), -(x - mean) / 0.25, atol=1e-12)
    assert g.num_classes == 1 and g.dtype == torch.float64
    with pytest.raises(ValueError, match="var"):
        gaussian(0.0, 0.0)
    with pytest.raises(TypeError, match="dim"):
        gaussian(0.0, 1.0, dim=1.5)


def test_exact_cg_is_eq166_by_hand_and_equals_exact_cfg():
    mix = random_mixture(2, (2, 1), seed=3)
    s = cosine_schedule(30)
    x = torch.randn(8, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 1, 5, 9, 14, 20, 25, 29])
    sigma = (1 - s.alpha_bar[t]).sqrt()[:, None].double()
    by_hand = torch.stack(
        [
            exact_eps_fn(mix, s)(x[i : i + 1], t[i : i + 1])[0]
            - 3.0
            * sigma[i]
            * mix.diffuse(float(s.alpha_bar[t[i]])).classifier_grad(x[i : i + 1], 0)[0]
            for i in range(8)
        ]
    )
    got = exact_cg_eps_fn(mix, s, 0, 3.0)(x, t)
    assert torch.allclose(got, by_hand, atol=1e-10)
    assert torch.allclose(got, exact_cfg_eps_fn(mix, s, 0, 3.0)(x, t), atol=1e-9)
    with pytest.raises(TypeError, match="^y must be an int"):
        exact_cg_eps_fn(mix, s, None, 3.0)


def test_exact_cfg_is_eq_170_of_the_two_exact_predictors_bit_for_bit():
    """exact_cfg_eps_fn computes both branches in one pass over the components; it must equal
    classifier_free_eps_fn of the two exact predictors exactly, on a shared-covariance mixture (the
    one-pass path) and on one with different covariances (two passes), at several steps at once."""
    from diffcourse.data import three_blobs
    from diffcourse.guidance import classifier_free_eps_fn
    from diffcourse.mixture import exact_cfg_eps_fn

    s = cosine_schedule(50)
    gen = torch.Generator().manual_seed(0)
    for mix in (three_blobs(), random_mixture(3)):
        x = torch.randn(40, mix.dim, generator=gen, dtype=mix.dtype)
        t = torch.randint(0, 50, (40,), generator=gen)
        y = torch.randint(0, mix.num_classes, (40,), generator=gen)
        for gamma in (0.5, 3.0):
            two = classifier_free_eps_fn(exact_eps_fn(mix, s, y), exact_eps_fn(mix, s), gamma)
            assert torch.equal(exact_cfg_eps_fn(mix, s, y, gamma)(x, t), two(x, t))


def test_exact_log_ratio_fn_answers_in_x_t_dtype():
    """Like every exact predictor (one body, ``_exact_fn``), the ratio comes back in x_t's dtype,
    at one step or many; before, it came back in the mixture's whatever x_t was."""
    from diffcourse.mixture import exact_log_ratio_fn

    mix, s = random_mixture(2, (2, 1), seed=3), cosine_schedule(30)
    ratio = exact_log_ratio_fn(mix, s, 1)
    x = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for t in (torch.full((12,), 7), torch.arange(12) % 4 * 9):
        want = ratio(x, t)
        got = ratio(x.float(), t)
        assert want.dtype == torch.float64 and got.dtype == torch.float32 and got.shape == (12,)
        assert torch.allclose(got.double(), want, atol=1e-5)


def test_exact_log_ratio_fn_checks_x_t():
    from diffcourse.mixture import exact_log_ratio_fn

    ratio = exact_log_ratio_fn(random_mixture(2, (1, 1), seed=0), cosine_schedule(20), 1)
    with pytest.raises(ValueError, match="^x_t must have shape"):
        ratio(torch.zeros(4, 3, dtype=torch.float64), torch.full((4,), 5))
    with pytest.raises(TypeError, match="^x_t must be a floating-point"):
        ratio(torch.zeros(4, 2, dtype=torch.long), torch.full((4,), 5))


def test_grid_sample_refuses_a_nan_or_infinite_log_density_at_some_point():
    """A NaN or +inf log-density at one point of the grid failed inside torch's multinomial() as
    "probability entry < 0"; -inf (no mass) is a density's own value, and taken."""
    for bad in (float("nan"), math.inf):

        def log_density(z, bad=bad):
            out = -z.pow(2).sum(1)
            out[5] = bad
            return out

        with pytest.raises(ValueError, match="^log_density must be finite or -inf"):
            grid_sample(log_density, 10, -6.0, 6.0, cells=50)

    def no_mass_there(z):
        out = -z.pow(2).sum(1)
        out[5] = -math.inf
        return out

    assert grid_sample(no_mass_there, 10, -6.0, 6.0, cells=50).shape == (10, 2)
