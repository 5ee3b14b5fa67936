"""Chapter 9's coding exercises: each reference solution in book/solutions/ is checked against the
package's own functions or against a closed form it does not use itself."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from diffcourse.data import checkerboard, three_blobs
from diffcourse.guidance import classifier_guided_eps_fn
from diffcourse.mixture import GaussianMixture, exact_classifier_grad_fn, exact_eps_fn
from diffcourse.samplers import ddim_sample, ddpm_step
from diffcourse.schedules import cosine_schedule
from diffcourse.targets import eps_to_x0

SOLUTIONS = Path(__file__).resolve().parents[1] / "book" / "solutions"


def load(name: str):
    """Import book/solutions/<name>.py by path (it is not a package, and not collected as tests)."""
    spec = importlib.util.spec_from_file_location(f"solutions_{name}", SOLUTIONS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_chapter_has_a_solution_file():
    assert sorted(p.name for p in SOLUTIONS.glob("ch0*.py")) == [f"ch0{i}.py" for i in range(1, 9)]


# ---- chapter 1: the exact denoiser of one Gaussian ------------------------------------------------------


def test_ch01_gaussian_denoiser():
    sol = load("ch01")
    schedule = cosine_schedule(200)
    mu, s2 = torch.tensor([0.7, -1.3], dtype=torch.float64), 0.3
    mixture = GaussianMixture(
        mu[None],
        s2 * torch.eye(2, dtype=torch.float64)[None],
        torch.ones(1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.long),
    )
    x_t = 2 * torch.randn(500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = exact_eps_fn(mixture, schedule)
    for step in (0, 50, 120, 199):
        a = float(schedule.alpha_bar[step])
        eps = sol.gaussian_eps(x_t, a, mu, s2)
        t = torch.full((500,), step, dtype=torch.long)
        torch.testing.assert_close(eps, exact(x_t, t), rtol=1e-10, atol=1e-12)
        # Tweedie's x0 equals the Gaussian regression of x_0 on x_t: mu + Cov(x0, x_t) Var(x_t)^-1 (x_t - E x_t)
        regression = mu + a**0.5 * s2 / (a * s2 + 1 - a) * (x_t - a**0.5 * mu)
        torch.testing.assert_close(
            sol.gaussian_x0(x_t, a, mu, s2), regression, rtol=1e-10, atol=1e-12
        )
        torch.testing.assert_close(eps_to_x0(x_t, eps, a), regression, rtol=1e-10, atol=1e-12)


# ---- chapter 2: the gain of knowing y --------------------------------------------------------------------


def test_ch02_label_gain_matches_the_loss_difference():
    """G_t against its definition: the best loss without y minus the best loss with y, both from the
    exact noise predictors (no classifier gradient involved), on the same kind of draws."""
    sol = load("ch02")
    mixture, schedule, step, n = checkerboard(dtype=torch.float64), cosine_schedule(200), 60, 20000
    a = float(schedule.alpha_bar[step])
    gain, gain_se = sol.label_gain(mixture, a, n, torch.Generator().manual_seed(0))

    gen = torch.Generator().manual_seed(1)
    x0, y = mixture.sample(n, generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=x0.dtype)
    x_t = a**0.5 * x0 + (1 - a) ** 0.5 * eps
    t = torch.full((n,), step, dtype=torch.long)
    without_y = (eps - exact_eps_fn(mixture, schedule)(x_t, t)).pow(2).sum(1)
    with_y = (eps - exact_eps_fn(mixture, schedule, y)(x_t, t)).pow(2).sum(1)
    diff = without_y - with_y
    se = math.hypot(gain_se, (diff.std() / n**0.5).item())
    assert gain > 0.01  # not trivially zero at a middle step
    assert abs(gain - diff.mean().item()) < 5 * se, (gain, diff.mean().item(), se)


def test_ch02_label_gain_is_zero_when_classes_share_their_law():
    sol = load("ch02")
    means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]], dtype=torch.float64).repeat(2, 1)
    covs = 0.2 * torch.eye(2, dtype=torch.float64).expand(4, 2, 2)
    twins = GaussianMixture(
        means, covs, torch.ones(4, dtype=torch.float64), torch.tensor([0, 0, 1, 1])
    )
    gain, _ = sol.label_gain(twins, 0.5, 2000, torch.Generator().manual_seed(0))
    assert abs(gain) < 1e-20


# ---- chapter 3: two classes with a shared covariance ---------------------------------------------------


def test_ch03_two_class_gradient_against_the_mixture():
    sol = load("ch03")
    g = torch.Generator().manual_seed(3)
    D = 3
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    cov = 0.3 * A @ A.T + 0.2 * torch.eye(D, dtype=torch.float64)
    mu0, mu1 = (
        torch.randn(D, generator=g, dtype=torch.float64),
        torch.randn(D, generator=g, dtype=torch.float64),
    )
    w0, w1 = 0.3, 0.7
    mixture = GaussianMixture(
        torch.stack([mu0, mu1]),
        torch.stack([cov, cov]),
        torch.tensor([w0, w1], dtype=torch.float64),
        torch.tensor([0, 1]),
    )
    x = 1.5 * torch.randn(400, D, generator=g, dtype=torch.float64)
    for a in (0.999, 0.6, 0.1, 1e-3):
        noisy = mixture.diffuse(a)
        log_odds = noisy.class_log_posterior(x) @ torch.tensor([-1.0, 1.0], dtype=torch.float64)
        torch.testing.assert_close(
            sol.two_class_log_odds(x, mu0, mu1, cov, w0, w1, a), log_odds, rtol=1e-9, atol=1e-9
        )
        for y in (0, 1):
            torch.testing.assert_close(
                sol.two_class_grad(x, y, mu0, mu1, cov, w0, w1, a),
                noisy.classifier_grad(x, y),
                rtol=1e-8,
                atol=1e-10,
            )


# ---- chapter 4: classifier guidance in noise form -----------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.5])
def test_ch04_classifier_guided_eps(gamma):
    sol = load("ch04")
    mixture, schedule, y = three_blobs(dtype=torch.float64), cosine_schedule(200), 2
    x_t = 1.5 * torch.randn(300, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    guided = classifier_guided_eps_fn(
        exact_eps_fn(mixture, schedule),
        exact_classifier_grad_fn(mixture, schedule, y),
        schedule,
        gamma,
    )
    for step in (0, 40, 100, 180):
        a = float(schedule.alpha_bar[step])
        t = torch.full((300,), step, dtype=torch.long)
        mine = sol.classifier_guided_eps(mixture, x_t, a, y, gamma)
        torch.testing.assert_close(mine, guided(x_t, t), rtol=1e-8, atol=1e-10)
        if gamma == 1.0:  # eq. 166 at gamma = 1 is eq. 165: the conditional predictor
            torch.testing.assert_close(
                mine, exact_eps_fn(mixture, schedule, y)(x_t, t), rtol=1e-8, atol=1e-10
            )


# ---- chapter 5: condition dropout ----------------------------------------------------------------------


def test_ch05_drop_labels():
    sol = load("ch05")
    n, C = 200_000, 3
    y = torch.arange(n) % C
    for p in (0.0, 0.1, 0.5, 1.0):
        out = sol.drop_labels(y, p, C, torch.Generator().manual_seed(5))
        dropped = out == C
        assert out.dtype == y.dtype and out.shape == y.shape
        assert torch.equal(out[~dropped], y[~dropped])  # kept labels are unchanged
        se = math.sqrt(p * (1 - p) / n)
        assert abs(dropped.double().mean().item() - p) <= 5 * se + 1e-12
        for c in range(C):  # the coin ignores the label
            share = dropped[y == c].double().mean().item()
            assert abs(share - p) <= 5 * math.sqrt(p * (1 - p) * C / n) + 1e-12
    again = sol.drop_labels(y, 0.1, C, torch.Generator().manual_seed(5))
    assert torch.equal(again, sol.drop_labels(y, 0.1, C, torch.Generator().manual_seed(5)))


# ---- chapter 6: tilt then noise, or noise then tilt ---------------------------------------------------


def _grid_moments(log_density, lo=-12.0, hi=12.0, n=240_001):
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    w = torch.softmax(log_density(x), 0)
    mean = (w * x).sum()
    return mean.item(), (w * (x - mean) ** 2).sum().item()


def _log_normal(x, m, c):
    return -0.5 * (x - m) ** 2 / c - 0.5 * math.log(c)


def test_ch06_the_chapter_numbers():
    sol = load("ch06")
    assert sol.tilt_then_noise(1.0, 0.25, 1.0, 2.0, 0.5)[1] == pytest.approx(4 / 7)
    assert sol.noise_then_tilt(1.0, 0.25, 1.0, 2.0, 0.5)[1] == pytest.approx(1 / 2.2)
    # exercise 6.1: the two means, 8/7 and 16/11 of the mean times sqrt(0.5)
    assert sol.tilt_then_noise(1.0, 0.25, 1.0, 2.0, 0.5)[0] == pytest.approx(8 / 7 * 0.5**0.5)
    assert sol.noise_then_tilt(1.0, 0.25, 1.0, 2.0, 0.5)[0] == pytest.approx(16 / 11 * 0.5**0.5)
    for gamma in (0.0, 1.0):  # a diffusion: the two orders agree
        for a in (0.9, 0.5, 0.1):
            assert sol.tilt_then_noise(1.0, 0.25, 1.0, gamma, a) == pytest.approx(
                sol.noise_then_tilt(1.0, 0.25, 1.0, gamma, a)
            )
    # at both ends they agree for any gamma: both are the clean tilted law at a = 1, both N(0, 1) as a -> 0
    assert sol.tilt_then_noise(1.0, 0.25, 1.0, 4.0, 1.0) == pytest.approx(
        sol.noise_then_tilt(1.0, 0.25, 1.0, 4.0, 1.0)
    )
    for moments in (
        sol.tilt_then_noise(1.0, 0.25, 1.0, 4.0, 1e-12),
        sol.noise_then_tilt(1.0, 0.25, 1.0, 4.0, 1e-12),
    ):
        assert moments == pytest.approx((0.0, 1.0), abs=1e-5)


@pytest.mark.parametrize("gamma,a", [(2.0, 0.5), (4.0, 0.3), (3.0, 0.9)])
def test_ch06_against_numerical_integration(gamma, a):
    sol = load("ch06")
    mu, s2, v2 = 1.0, 0.25, 1.0
    # noise, then tilt: the noisy class and data laws, tilted on a grid
    c_cls, c_dat = a * s2 + 1 - a, a * v2 + 1 - a
    got = _grid_moments(
        lambda x: (
            gamma * _log_normal(x, a**0.5 * mu, c_cls) + (1 - gamma) * _log_normal(x, 0.0, c_dat)
        )
    )
    assert sol.noise_then_tilt(mu, s2, v2, gamma, a) == pytest.approx(got, rel=1e-6, abs=1e-9)
    # tilt, then noise: the clean tilted law on a grid, then the noising of its two moments
    m0, c0 = _grid_moments(
        lambda x: gamma * _log_normal(x, mu, s2) + (1 - gamma) * _log_normal(x, 0.0, v2)
    )
    assert sol.tilt_then_noise(mu, s2, v2, gamma, a) == pytest.approx(
        (a**0.5 * m0, a * c0 + 1 - a), rel=1e-6
    )


# ---- chapter 7: the Frechet distance -------------------------------------------------------------------


def test_ch07_frechet_closed_forms():
    sol = load("ch07")
    g = torch.Generator().manual_seed(7)
    F = 6
    mu_a, mu_b = (
        torch.randn(F, generator=g, dtype=torch.float64),
        torch.randn(F, generator=g, dtype=torch.float64),
    )
    da, db = (
        torch.rand(F, generator=g, dtype=torch.float64) + 0.1,
        torch.rand(F, generator=g, dtype=torch.float64) + 0.1,
    )
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2
    expected = (mu_a - mu_b).pow(2).sum() + (da.sqrt() - db.sqrt()).pow(2).sum()
    assert sol.gaussian_frechet(mu_a, torch.diag(da), mu_b, torch.diag(db)) == pytest.approx(
        expected.item(), rel=1e-10
    )
    # full covariances: Tr (S_a S_b)^{1/2} from the eigenvalues of the (non-symmetric) product
    A, B = (
        torch.randn(F, F, generator=g, dtype=torch.float64),
        torch.randn(F, F, generator=g, dtype=torch.float64),
    )
    Sa, Sb = (
        A @ A.T + 0.1 * torch.eye(F, dtype=torch.float64),
        B @ B.T + 0.1 * torch.eye(F, dtype=torch.float64),
    )
    root_trace = torch.linalg.eigvals(Sa @ Sb).real.clamp(min=0).sqrt().sum()
    expected = (mu_a - mu_b).pow(2).sum() + torch.trace(Sa + Sb) - 2 * root_trace
    got = sol.gaussian_frechet(mu_a, Sa, mu_b, Sb)
    assert got == pytest.approx(expected.item(), rel=1e-8)
    assert got == pytest.approx(sol.gaussian_frechet(mu_b, Sb, mu_a, Sa), rel=1e-8)  # symmetric


def test_ch07_frechet_of_features():
    sol = load("ch07")
    g = torch.Generator().manual_seed(8)
    a = torch.randn(500, 16, generator=g) @ torch.randn(16, 16, generator=g)
    assert abs(sol.frechet_distance(a, a.clone())) < 1e-8  # itself: zero
    shift = torch.randn(16, generator=g)
    assert sol.frechet_distance(a, a + shift) == pytest.approx(
        shift.double().pow(2).sum().item(), rel=1e-6
    )
    b = 2 * a  # S_b = 4 S_a: Tr(S_a + 4 S_a - 4 S_a) = Tr S_a, plus |mu_a|^2
    expected = a.double().mean(0).pow(2).sum() + torch.trace(torch.cov(a.double().T))
    assert sol.frechet_distance(a, b) == pytest.approx(expected.item(), rel=1e-6)
    # and the reader's version agrees with the one the lab uses
    from diffcourse.metrics import frechet_distance

    c = torch.randn(400, 16, generator=g) * 1.5 + 0.3
    assert sol.frechet_distance(a, c) == pytest.approx(frechet_distance(a, c), rel=1e-6)


# ---- chapter 8: one DDIM step ---------------------------------------------------------------------------


def test_ch08_ddim_step_reproduces_ddim_sample():
    sol = load("ch08")
    mixture, schedule, steps = three_blobs(dtype=torch.float64), cosine_schedule(200), 10
    eps_fn = exact_eps_fn(mixture, schedule, 0)
    noise = torch.randn(256, 2, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    reference = ddim_sample(eps_fn, noise, schedule, steps=steps, eta=0.0, progress=False)
    levels = torch.linspace(schedule.T - 1, 0, steps).round().long().unique_consecutive().tolist()
    x = noise
    for i, step in enumerate(levels):
        eps = eps_fn(x, torch.full((x.shape[0],), step, dtype=torch.long))
        a_s = float(schedule.alpha_bar[levels[i + 1]]) if i + 1 < len(levels) else 1.0
        x = sol.ddim_step(x, eps, float(schedule.alpha_bar[step]), a_s, eta=0.0)
    torch.testing.assert_close(x, reference, rtol=1e-10, atol=1e-10)


def test_ch08_ddim_with_eta_one_is_a_ddpm_step():
    """eta = 1 between neighbouring levels: the ancestral step's mean and the posterior's variance."""
    sol = load("ch08")
    schedule = cosine_schedule(200)
    g = torch.Generator().manual_seed(10)
    x, eps, z = (torch.randn(64, 2, generator=g, dtype=torch.float64) for _ in range(3))
    for step in (1, 50, 150, 199):
        a_t, a_s = float(schedule.alpha_bar[step]), float(schedule.alpha_bar[step - 1])
        torch.testing.assert_close(
            sol.ddim_step(x, eps, a_t, a_s, eta=1.0, noise=z),
            ddpm_step(x, eps, step, schedule, z),
            rtol=1e-9,
            atol=1e-9,
        )


# ---- chapter 10: the exact "not" ------------------------------------------------------------------------
from diffcourse.data import attribute_grid  # noqa: E402
from diffcourse.metrics import distance_to_exact  # noqa: E402
from diffcourse.samplers import ddpm_sample  # noqa: E402


def test_ch10_has_a_solution_file():
    assert (SOLUTIONS / "ch10.py").is_file()


def test_ch10_not_score_against_autograd():
    """The score of log p_t(x|left) + log(1 - p_t(blue|x)), by autograd, at three noise levels."""
    sol = load("ch10")
    A = attribute_grid(dtype=torch.float64)
    x = 2 * torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for a in (1.0, 0.6, 0.1):
        plus, minus = A.position.diffuse(a), A.colour.diffuse(a)
        xg = x.clone().requires_grad_(True)
        # log(1 - p(blue|x)) as the log of the other colours' posterior: finite even where p(blue|x) = 1
        log_q = plus.log_prob(xg, 0) + torch.logsumexp(minus.class_log_posterior(xg)[:, :2], 1)
        (want,) = torch.autograd.grad(log_q.sum(), xg)
        assert torch.allclose(sol.not_score(plus, 0, minus, 2, x), want, rtol=1e-7, atol=1e-9), a


def test_ch10_not_samples_what_was_meant():
    """On `rows`, left and blue are independent given x_t at every t, so DDPM on the exact "not"
    samples p(x | left, not blue): the red and green components of the left column, half each."""
    sol = load("ch10")
    A = attribute_grid(spacing=1.6, std=0.4)
    schedule = cosine_schedule(100)
    x = ddpm_sample(
        sol.not_eps_fn(A.position, 0, A.colour, 2, schedule),
        (4000, 2),
        schedule,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    assert torch.isfinite(x).all()
    blue = (A.colour.class_log_posterior(x).argmax(1) == 2).double().mean().item()
    assert blue < 0.02

    def meant(n, g):
        pairs = torch.tensor([A.pair(0, 0), A.pair(0, 1)])[torch.randint(0, 2, (n,), generator=g)]
        return A.joint.sample(n, pairs, generator=g)[0]

    assert distance_to_exact(x, meant, seed=4)["ratio"] < 1.5


# ---- chapter 11: what zero-init samples ------------------------------------------------------------------


@pytest.mark.parametrize("ell, t_start", [(0.5, 0.96), (0.3, 0.8), (2.0, 0.9)])
def test_ch11_zero_init_against_the_sampler(ell, t_start):
    """Fine Heun steps of the exact velocity of one Gaussian, started at t_start from the noise,
    against the closed form, sample by sample; and the law's two moments."""
    from diffcourse import flow
    from diffcourse.mixture import exact_velocity_fn

    sol = load("ch11")
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    one = GaussianMixture(
        mu[None],
        ell**2 * torch.eye(2, dtype=torch.float64)[None],
        torch.ones(1, dtype=torch.float64),
        torch.zeros(1, dtype=torch.long),
    )
    noise = torch.randn(20_000, 2, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    x = flow.heun_sample(
        exact_velocity_fn(one), noise, times=flow.flow_times(200, t_start), progress=False
    )
    torch.testing.assert_close(x, sol.zero_init_map(noise, mu, ell, t_start), rtol=0, atol=1e-3)
    mean, std = sol.zero_init_law(mu, ell, t_start)
    assert (x.mean(0) - mean).abs().max() < 4 * std / 20_000**0.5
    assert abs(x.std(0).mean().item() / std - 1) < 0.02


# ---- chapter 12: the tilted law by rejection ------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 3.0])
def test_ch12_tilted_by_rejection_against_the_grid(gamma):
    """The reader's rejection sampler against chapter 6's grid sampler (an independent method): the
    same mean and covariance; and its acceptance rate against the integral p(y)^(gamma - 1) Z_gamma
    (gamma >= 1) or p(y)^gamma Z_gamma (gamma < 1), Z_gamma computed on the grid."""
    from diffcourse.mixture import sample_tilted, tilted_log_prob

    sol = load("ch12")
    mix = three_blobs(dtype=torch.float64)
    n = 40000
    x, rate = sol.tilted_by_rejection(mix, 0, gamma, n, generator=torch.Generator().manual_seed(1))
    grid = sample_tilted(mix, 0, gamma, n, generator=torch.Generator().manual_seed(2))
    assert x.shape == (n, 2)
    se = (torch.cov(grid.T).diagonal() / n).sqrt()
    assert ((x.mean(0) - grid.mean(0)).abs() < 6 * se).all()
    assert torch.allclose(torch.cov(x.T), torch.cov(grid.T), rtol=0.05, atol=0.01)
    # Z_gamma = integral of p(x|y)^gamma p(x)^(1 - gamma) by the midpoint rule on [-6, 6]^2
    h = 12 / 600
    c = -6 + h * (torch.arange(600, dtype=torch.float64) + 0.5)
    pts = torch.stack(torch.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2)
    z = tilted_log_prob(mix, pts, 0, gamma).exp().sum().item() * h * h
    prior = mix.class_weights[0].item()
    expected = prior ** (gamma - 1) * z if gamma >= 1 else prior**gamma * z
    assert rate == pytest.approx(expected, rel=0.03)
