"""Chapter 11: the rectified-flow path, the exact velocity of a mixture, Euler and Heun, and the
velocity-form guidance rules (eq. 170, CFG-Zero*, guidance distillation)."""

import pytest
import torch

from diffcourse import flow
from diffcourse.data import three_blobs
from diffcourse.guidance import classifier_free_eps_fn, classifier_free_guidance
from diffcourse.mixture import GaussianMixture, exact_eps_fn, exact_velocity_fn
from diffcourse.models import VelocityMLP
from diffcourse.samplers import ddim_sample
from diffcourse.schedules import cosine_schedule

F64 = torch.float64


def full(n, value, dtype=F64):
    return torch.full((n,), value, dtype=dtype)


def skewed_mixture() -> GaussianMixture:
    """Three dimensions, full covariances, two classes of two components each, unequal weights."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 3, 3, generator=g, dtype=F64)
    covs = a @ a.transpose(1, 2) + 0.1 * torch.eye(3, dtype=F64)
    means = 2 * torch.randn(4, 3, generator=g, dtype=F64)
    return GaussianMixture(
        means, covs, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=F64), torch.tensor([0, 1, 0, 1])
    )


def path_mixture(mixture: GaussianMixture, t: float) -> GaussianMixture:
    """The law of x_t = (1 - t) x_0 + t eps, built directly: means (1 - t) mu, covariances (1 - t)^2 Sigma + t^2 I."""
    eye = torch.eye(mixture.dim, dtype=mixture.dtype)
    return GaussianMixture(
        (1 - t) * mixture.means,
        (1 - t) ** 2 * mixture.covs + t**2 * eye,
        mixture.weights,
        mixture.labels,
    )


def test_flow_marginal_is_the_law_of_x_t():
    mixture = skewed_mixture()
    for t in (0.0, 0.3, 1.0):
        m = mixture.flow_marginal(t)
        expected = path_mixture(mixture, t)
        torch.testing.assert_close(m.means, expected.means)
        torch.testing.assert_close(m.covs, expected.covs)
    # against draws: mean and covariance of (1 - t) x_0 + t eps
    g = torch.Generator().manual_seed(20)
    x0 = mixture.sample(200_000, generator=g)[0]
    x_t = flow.interpolate(x0, torch.randn(x0.shape, generator=g, dtype=F64), full(200_000, 0.3))
    m = mixture.flow_marginal(0.3)
    mean = (m.weights[:, None] * m.means).sum(0)
    torch.testing.assert_close(x_t.mean(0), mean, atol=0.02, rtol=0)
    # ... and the covariance, by the law of total variance over the components
    within = (m.weights[:, None, None] * m.covs).sum(0)
    between = (
        m.weights[:, None, None] * torch.einsum("ki,kj->kij", m.means - mean, m.means - mean)
    ).sum(0)
    torch.testing.assert_close(torch.cov(x_t.T), within + between, atol=0.03, rtol=0)
    with pytest.raises(ValueError, match="^t must be in"):
        mixture.flow_marginal(1.5)


# ---- the exact velocity -------------------------------------------------------------------------------


@pytest.mark.parametrize("y", [None, 1])
@pytest.mark.parametrize("t", [0.01, 0.2, 0.5, 0.8, 0.99])
def test_exact_velocity_against_autograd_of_the_density(y, t):
    """v = -(x + t grad log p_t(x)) / (1 - t), the gradient taken by autograd of log p_t computed by
    Cholesky from the path's own mixture: independent of the eigenbasis formula in exact_velocity_fn."""
    mixture = skewed_mixture()
    x = 2 * torch.randn(300, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    probe = x.clone().requires_grad_(True)
    (score,) = torch.autograd.grad(path_mixture(mixture, t).log_prob(probe, y).sum(), probe)
    expected = -(x + t * score) / (1 - t)
    torch.testing.assert_close(
        exact_velocity_fn(mixture, y)(x, full(300, t)), expected, rtol=1e-10, atol=1e-10
    )


def test_exact_velocity_is_finite_at_both_ends_with_the_closed_forms():
    mixture = skewed_mixture()
    x = 3 * torch.randn(200, 3, generator=torch.Generator().manual_seed(2), dtype=F64)
    for y, mean in (
        (None, (mixture.weights[:, None] * mixture.means).sum(0)),
        (
            1,
            (mixture.weights[1::2, None] * mixture.means[1::2]).sum(0)
            / mixture.weights[1::2].sum(),
        ),
    ):
        v = exact_velocity_fn(mixture, y)
        torch.testing.assert_close(
            v(x, full(200, 0.0)), -x, rtol=1e-12, atol=1e-12
        )  # E[eps | x_0] = 0
        torch.testing.assert_close(
            v(x, full(200, 1.0)), x - mean, rtol=1e-12, atol=1e-12
        )  # E[x_0 | noise]


def test_exact_velocity_is_the_conditional_mean_of_eps_minus_x0():
    """The defining property, by Monte Carlo: the residual eps - x_0 - v(x_t) is uncorrelated with
    every function of x_t (here 1, x_t and its square), within 5 standard errors."""
    mixture = skewed_mixture()
    g = torch.Generator().manual_seed(3)
    n, t = 200_000, 0.6
    x0, _ = mixture.sample(n, generator=g)
    eps = torch.randn(n, 3, generator=g, dtype=F64)
    x_t = flow.interpolate(x0, eps, full(n, t))
    resid = eps - x0 - exact_velocity_fn(mixture)(x_t, full(n, t))
    for f in (torch.ones(n, 1, dtype=F64), x_t, x_t**2):
        prod = (resid[:, :, None] * f[:, None, :]).reshape(n, -1)
        z = prod.mean(0) / (prod.std(0) / n**0.5)
        assert z.abs().max() < 5, z


def test_exact_velocity_follows_the_input_dtype_and_mixes_classes_by_their_weight():
    mixture = three_blobs(dtype=F64)
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(4))
    v = exact_velocity_fn(mixture)(x, full(50, 0.5, torch.float32))
    assert v.dtype == torch.float32
    # p(x) = sum_y p(y) p(x|y): at t = 1 the velocities are x - E[x0] and average by the class weights
    t1 = full(50, 1.0)
    per_class = sum(
        mixture.class_weights[c] * exact_velocity_fn(mixture, c)(x.double(), t1) for c in range(3)
    )
    torch.testing.assert_close(exact_velocity_fn(mixture)(x.double(), t1), per_class)


# ---- the path, the conversions ------------------------------------------------------------------------


def test_conversions_invert_each_other_and_match_the_path():
    g = torch.Generator().manual_seed(5)
    x0, eps = (
        torch.randn(100, 2, generator=g, dtype=F64),
        torch.randn(100, 2, generator=g, dtype=F64),
    )
    t = torch.rand(100, generator=g, dtype=F64) * 0.98 + 0.01
    x_t = flow.interpolate(x0, eps, t)
    torch.testing.assert_close(x_t, (1 - t[:, None]) * x0 + t[:, None] * eps)
    v = eps - x0
    torch.testing.assert_close(flow.velocity_to_x0(v, x_t, t), x0)
    torch.testing.assert_close(flow.velocity_to_eps(v, x_t, t), eps)
    torch.testing.assert_close(flow.eps_to_velocity(eps, x_t, t), v)
    score = torch.randn(100, 2, generator=g, dtype=F64)
    torch.testing.assert_close(
        flow.velocity_to_score(flow.score_to_velocity(score, x_t, t), x_t, t), score
    )


def test_score_to_velocity_on_exact_scores():
    mixture = skewed_mixture()
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(6), dtype=F64)
    for t in (0.1, 0.7):
        score = path_mixture(mixture, t).score(x, 0)
        torch.testing.assert_close(
            flow.score_to_velocity(score, x, full(100, t)),
            exact_velocity_fn(mixture, 0)(x, full(100, t)),
        )


def test_matched_time_maps_the_diffusion_path_onto_this_one():
    a_bar = torch.tensor([0.999, 0.5, 0.01], dtype=F64)
    t, c = flow.matched_time(a_bar)
    torch.testing.assert_close(c * a_bar.sqrt(), 1 - t)  # the x_0 coefficients agree after scaling
    torch.testing.assert_close(c * (1 - a_bar).sqrt(), t)  # and the eps coefficients
    assert flow.matched_time(1.0)[0] == 0


# ---- eq. 170 on velocities is eq. 170 on scores ---------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.5, 3.0, 7.0])
def test_velocity_cfg_equals_score_form_cfg_at_matched_t(gamma):
    """Chapter 5's exact guidance in noise form, on chapter 5's schedule, turned into a velocity at the
    matched time, against eq. 170 on the exact velocities."""
    mixture, schedule = three_blobs(dtype=F64), cosine_schedule(200)
    guided_v = flow.velocity_cfg_fn(
        exact_velocity_fn(mixture, 0), exact_velocity_fn(mixture), gamma
    )
    guided_eps = classifier_free_eps_fn(
        exact_eps_fn(mixture, schedule, 0), exact_eps_fn(mixture, schedule), gamma
    )
    x = 2 * torch.randn(400, 2, generator=torch.Generator().manual_seed(7), dtype=F64)
    for step in (0, 20, 100, 180, 199):
        t, c = flow.matched_time(schedule.alpha_bar[step])
        tt = full(400, float(t))
        expected = flow.eps_to_velocity(guided_eps(x / c, torch.full((400,), step)), x, tt)
        torch.testing.assert_close(guided_v(x, tt), expected, rtol=1e-9, atol=1e-9)


def test_velocity_cfg_is_eq_170_and_its_score_is_eq_170_of_the_scores():
    mixture = skewed_mixture()
    x = torch.randn(100, 3, generator=torch.Generator().manual_seed(8), dtype=F64)
    t = full(100, 0.4)
    vc, vu = exact_velocity_fn(mixture, 1)(x, t), exact_velocity_fn(mixture)(x, t)
    guided = flow.velocity_cfg_fn(exact_velocity_fn(mixture, 1), exact_velocity_fn(mixture), 2.5)(
        x, t
    )
    torch.testing.assert_close(guided, 2.5 * vc - 1.5 * vu)
    pt = path_mixture(mixture, 0.4)
    score = classifier_free_guidance(pt.score(x, 1), pt.score(x), 2.5)
    torch.testing.assert_close(flow.velocity_to_score(guided, x, t), score)


# ---- samplers ---------------------------------------------------------------------------------------------


def test_euler_and_heun_with_the_exact_velocity_reach_the_mixtures_moments():
    mixture = three_blobs(dtype=F64)
    ref, _ = mixture.sample(400_000, generator=torch.Generator().manual_seed(9))
    mean, cov = ref.mean(0), torch.cov(ref.T)
    noise = torch.randn(40_000, 2, generator=torch.Generator().manual_seed(10), dtype=F64)
    for sampler, steps in ((flow.euler_sample, 400), (flow.heun_sample, 40)):
        x = sampler(exact_velocity_fn(mixture), noise, steps=steps, progress=False)
        assert (x.mean(0) - mean).abs().max() < 0.03, sampler
        assert ((torch.cov(x.T) - cov).abs() / cov.diagonal().mean()).max() < 0.03, sampler


def test_heun_is_second_order_euler_first():
    """Halving the step divides Heun's error by about 4 and Euler's by about 2 (one Gaussian class,
    the same noise, against a run with many Heun steps)."""
    mixture = three_blobs(dtype=F64)
    v = exact_velocity_fn(mixture, 0)
    noise = torch.randn(2000, 2, generator=torch.Generator().manual_seed(11), dtype=F64)
    ref = flow.heun_sample(v, noise, steps=2000, progress=False)
    err = {
        (s, n): (s(v, noise, steps=n, progress=False) - ref).abs().max().item()
        for s in (flow.euler_sample, flow.heun_sample)
        for n in (20, 40)
    }
    assert 1.6 < err[flow.euler_sample, 20] / err[flow.euler_sample, 40] < 2.4
    assert 3.0 < err[flow.heun_sample, 20] / err[flow.heun_sample, 40] < 5.0


def test_euler_with_exact_velocity_is_ddim_with_eta_zero():
    """Chapter 8's DDIM on a diffusion schedule, and Euler on this path at the matched times, with
    the same guided exact predictions: the same samples up to the scale c (which is 1 at t = 0)."""
    mixture, schedule = three_blobs(dtype=F64), cosine_schedule(200)
    gamma = 3.0
    v = flow.velocity_cfg_fn(exact_velocity_fn(mixture, 0), exact_velocity_fn(mixture), gamma)
    eps = classifier_free_eps_fn(
        exact_eps_fn(mixture, schedule, 0), exact_eps_fn(mixture, schedule), gamma
    )
    levels = torch.linspace(199, 0, 20).round().long().unique_consecutive().tolist()
    times = [float(flow.matched_time(schedule.alpha_bar[s])[0]) for s in levels] + [0.0]
    noise = torch.randn(500, 2, generator=torch.Generator().manual_seed(12), dtype=F64)
    c0 = flow.matched_time(schedule.alpha_bar[levels[0]])[1]
    x_flow = flow.euler_sample(v, c0 * noise, times=times, progress=False)
    torch.testing.assert_close(
        x_flow, ddim_sample(eps, noise, schedule, steps=20, progress=False), rtol=1e-9, atol=1e-9
    )


def test_samplers_are_reproducible_and_call_back():
    v = exact_velocity_fn(three_blobs())
    a = flow.euler_sample(
        v, (64, 2), steps=5, generator=torch.Generator().manual_seed(13), progress=False
    )
    b = flow.euler_sample(
        v, (64, 2), steps=5, generator=torch.Generator().manual_seed(13), progress=False
    )
    assert torch.equal(a, b)
    seen = []
    flow.heun_sample(
        v,
        (64, 2),
        steps=5,
        generator=torch.Generator().manual_seed(13),
        progress=False,
        callback=lambda i, x, x0: seen.append((i, x.clone(), x0.clone())),
    )
    assert [s[0] for s in seen] == list(range(5))
    times = flow.flow_times(5)
    for i, x, x0 in seen:  # the clean estimate x0_hat = x_t - t v(x_t, t) at the step's own time
        t = full(64, float(times[i]), dtype=x.dtype)
        torch.testing.assert_close(x0, x - t[:, None] * v(x, t), rtol=0, atol=1e-6)


def test_sampler_counts_its_evaluations():
    calls = []

    def v(x, t):
        calls.append(float(t[0]))
        return -x

    flow.euler_sample(v, torch.zeros(3, 2), steps=4, progress=False)
    assert calls == [1.0, 0.75, 0.5, 0.25]
    calls.clear()
    flow.heun_sample(v, torch.zeros(3, 2), steps=4, progress=False)
    assert calls == [1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0]


# ---- CFG-Zero* ------------------------------------------------------------------------------------------


def test_cfg_zero_star_at_its_neutral_settings_is_velocity_cfg():
    mixture = three_blobs(dtype=F64)
    cond, uncond = exact_velocity_fn(mixture, 2), exact_velocity_fn(mixture)
    noise = torch.randn(300, 2, generator=torch.Generator().manual_seed(14), dtype=F64)
    plain = flow.euler_sample(
        flow.velocity_cfg_fn(cond, uncond, 4.0), noise, steps=25, progress=False
    )
    neutral = flow.euler_sample(
        flow.cfg_zero_star_fn(cond, uncond, 4.0, scale=False, t_zero=1.0),
        noise,
        steps=25,
        progress=False,
    )
    assert torch.equal(plain, neutral)
    scaled = flow.euler_sample(
        flow.cfg_zero_star_fn(cond, uncond, 4.0), noise, steps=25, progress=False
    )
    assert (scaled - plain).abs().max() > 1e-2  # the optimised scale does change something


def test_optimized_scale_is_the_least_squares_coefficient():
    g = torch.Generator().manual_seed(15)
    c, u = torch.randn(50, 4, generator=g, dtype=F64), torch.randn(50, 4, generator=g, dtype=F64)
    s = flow.optimized_scale(c, u)
    lstsq = torch.stack(
        [torch.linalg.lstsq(u[i : i + 1].T, c[i : i + 1].T).solution[0, 0] for i in range(50)]
    )
    torch.testing.assert_close(s[:, 0], lstsq)
    # the guided velocity uses it on the unconditional branch only
    torch.testing.assert_close(flow.cfg_zero_star(c, u, 3.0), 3 * c - 2 * s * u)
    assert torch.equal(flow.optimized_scale(c, torch.zeros_like(u)), torch.ones(50, 1, dtype=F64))
    torch.testing.assert_close(flow.optimized_scale(u, u), torch.ones(50, 1, dtype=F64))


def test_zero_init_is_the_sampler_started_later_from_the_same_noise():
    mixture = three_blobs(dtype=F64)
    cond, uncond = exact_velocity_fn(mixture, 0), exact_velocity_fn(mixture)
    noise = torch.randn(300, 2, generator=torch.Generator().manual_seed(16), dtype=F64)
    steps, zeroed = 25, 2
    zero = flow.cfg_zero_star_fn(
        cond, uncond, 3.0, scale=False, t_zero=flow.zero_init_time(steps, zeroed)
    )
    late = flow.euler_sample(
        flow.velocity_cfg_fn(cond, uncond, 3.0),
        noise,
        times=flow.flow_times(steps)[zeroed:],
        progress=False,
    )
    assert torch.equal(flow.euler_sample(zero, noise, steps=steps, progress=False), late)
    assert flow.zero_init_time(steps, 0) == 1.0


def test_zero_init_skips_both_branches():
    calls = []

    def branch(x, t):
        calls.append(1)
        return -x

    v = flow.cfg_zero_star_fn(branch, branch, 2.0, t_zero=0.9)
    assert (
        torch.equal(v(torch.ones(4, 2), full(4, 0.95, torch.float32)), torch.zeros(4, 2))
        and not calls
    )
    mixed = v(torch.ones(2, 2), torch.tensor([0.95, 0.5]))
    assert torch.equal(mixed[0], torch.zeros(2)) and len(calls) == 2
    # found by fuzzing: integer steps (5 > t_zero) returned zeros without a word
    with pytest.raises(TypeError, match="^t must be a floating-point"):
        v(torch.ones(2, 2), torch.tensor([5, 3]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        v(torch.ones(2, 2), torch.tensor([5.0, 3.0]))


# ---- the model, flow matching, guidance distillation -------------------------------------------------------


def test_velocity_mlp_shapes_labels_and_gamma():
    torch.manual_seed(0)
    model = VelocityMLP(dim=2, hidden=32, depth=2, num_classes=3)
    x, t = torch.randn(5, 2), torch.rand(5)
    assert model(x, t, torch.tensor([0, 1, 2, 3, 0])).shape == (5, 2)
    torch.testing.assert_close(
        model(x, t), model(x, t, torch.full((5,), 3))
    )  # None is the null label
    student = VelocityMLP(dim=2, hidden=32, depth=2, num_classes=3, guidance_input=True)
    y = torch.zeros(5, dtype=torch.long)
    # the gamma embedding starts at zero: a new student is its trunk at every gamma
    assert torch.equal(
        student(x, t, y, full(5, 1.0, torch.float32)), student(x, t, y, full(5, 4.0, torch.float32))
    )
    torch.nn.init.normal_(student.gamma_mlp[2].weight)
    a, b = (
        student(x, t, y, full(5, 1.0, torch.float32)),
        student(x, t, y, full(5, 4.0, torch.float32)),
    )
    assert not torch.allclose(a, b)
    # the shared embedding per distinct (t, y, gamma) gives the numbers of a row-by-row call
    rows = torch.cat(
        [
            student(x[i : i + 1], t[i : i + 1], y[i : i + 1], full(1, 4.0, torch.float32))
            for i in range(5)
        ]
    )
    torch.testing.assert_close(rows, b)


def test_flow_matching_loss_is_least_at_the_exact_velocity():
    mixture = three_blobs(dtype=F64)
    g = torch.Generator().manual_seed(17)
    x0, y = mixture.sample(20_000, generator=g)
    eps, t = (
        torch.randn(20_000, 2, generator=g, dtype=F64),
        torch.rand(20_000, generator=g, dtype=F64),
    )

    class Exact(torch.nn.Module):
        def __init__(self, scale=1.0):
            super().__init__()
            self.scale = scale

        def forward(self, x_t, t, y=None):
            return self.scale * exact_velocity_fn(mixture, y)(x_t, t)

    best = flow.flow_matching_loss(Exact(), x0, eps, t, y)
    assert best < flow.flow_matching_loss(Exact(1.1), x0, eps, t, y)
    assert best < flow.flow_matching_loss(Exact(), x0, eps, t)  # knowing y lowers the loss


def test_distilled_student_is_trained_toward_the_teachers_guided_velocity():
    torch.manual_seed(1)
    teacher = VelocityMLP(dim=2, hidden=32, depth=2, num_classes=3).double()
    student = VelocityMLP(dim=2, hidden=32, depth=2, num_classes=3, guidance_input=True).double()
    g = torch.Generator().manual_seed(18)
    x0, eps = torch.randn(64, 2, generator=g, dtype=F64), torch.randn(64, 2, generator=g, dtype=F64)
    t, y = torch.rand(64, generator=g, dtype=F64), torch.randint(0, 3, (64,), generator=g)
    x_t = flow.interpolate(x0, eps, t)
    ones = full(64, 1.0)
    torch.testing.assert_close(
        flow.guided_velocity_target(teacher, x_t, t, y, ones),
        teacher(x_t, t, y),
        rtol=1e-12,
        atol=1e-12,
    )
    expected = torch.mean((student(x_t, t, y, ones) - teacher(x_t, t, y)) ** 2)
    torch.testing.assert_close(
        flow.distillation_loss(student, teacher, x0, eps, t, y, ones), expected
    )
    # at gamma = 3 the target is eq. 170 of the teacher's two branches
    three = full(64, 3.0)
    torch.testing.assert_close(
        flow.guided_velocity_target(teacher, x_t, t, y, three),
        3 * teacher(x_t, t, y) - 2 * teacher(x_t, t, None),
        rtol=1e-12,
        atol=1e-12,
    )
    # a gamma per row (the training draws): the loss's target is eq. 170 row by row, and the
    # student is asked at each row's gamma (its gamma layer made non-zero so the input counts)
    torch.nn.init.normal_(student.gamma_mlp[2].weight, generator=g)
    gam = 1 + 3 * torch.rand(64, generator=g, dtype=F64)
    col = gam[:, None]
    target = col * teacher(x_t, t, y) + (1 - col) * teacher(x_t, t, None)
    torch.testing.assert_close(
        flow.distillation_loss(student, teacher, x0, eps, t, y, gam),
        torch.mean((student(x_t, t, y, gam) - target) ** 2),
    )
    # the student's sampler uses its gamma input at the scale it is given
    v = flow.student_velocity_fn(student, y, 3.0)
    torch.testing.assert_close(v(x_t, t), student(x_t, t, y, three))


# ---- bad input --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_t, error",
    [
        (torch.full((4,), 1.5, dtype=F64), ValueError),
        (torch.full((4,), -0.1, dtype=F64), ValueError),
        (torch.full((4,), float("nan"), dtype=F64), ValueError),
        (torch.full((3,), 0.5, dtype=F64), ValueError),
        (torch.full((4, 1), 0.5, dtype=F64), ValueError),
        (torch.full((4,), 1, dtype=torch.long), TypeError),
        (0.5, TypeError),
    ],
)
def test_bad_times_raise_clear_errors(bad_t, error):
    mixture = three_blobs(dtype=F64)
    x = torch.zeros(4, 2, dtype=F64)
    model = VelocityMLP(dim=2, hidden=8, depth=1, num_classes=3).double()
    for call in (
        lambda: exact_velocity_fn(mixture)(x, bad_t),
        lambda: model(x, bad_t),
        lambda: flow.interpolate(x, x, bad_t),
        lambda: flow.velocity_to_x0(x, x, bad_t),
    ):
        with pytest.raises(error, match="^t must"):
            call()


def test_other_bad_input():
    mixture, x, t = three_blobs(dtype=F64), torch.zeros(4, 2, dtype=F64), full(4, 0.5)
    with pytest.raises(ValueError, match="^x_t must have shape"):
        exact_velocity_fn(mixture)(torch.zeros(4, 3, dtype=F64), t)
    with pytest.raises(ValueError, match="^y must lie in"):
        exact_velocity_fn(mixture, 5)(x, t)
    with pytest.raises(ValueError, match="t must be < 1"):
        flow.score_to_velocity(x, x, full(4, 1.0))
    with pytest.raises(ValueError, match="t must be > 0"):
        flow.velocity_to_score(x, x, full(4, 0.0))
    with pytest.raises(ValueError, match="gamma"):
        flow.velocity_cfg_fn(exact_velocity_fn(mixture, 0), exact_velocity_fn(mixture), -1.0)
    with pytest.raises(TypeError, match="gamma"):
        flow.cfg_zero_star_fn(exact_velocity_fn(mixture, 0), exact_velocity_fn(mixture), "3")
    with pytest.raises(ValueError, match="t_zero"):
        flow.cfg_zero_star_fn(
            exact_velocity_fn(mixture, 0), exact_velocity_fn(mixture), 3.0, t_zero=1.5
        )
    with pytest.raises(ValueError, match="steps"):
        flow.euler_sample(exact_velocity_fn(mixture), x, steps=0)
    with pytest.raises(ValueError, match="times"):
        flow.euler_sample(exact_velocity_fn(mixture), x, times=[0.0, 1.0])
    with pytest.raises(ValueError, match="steps or times"):
        flow.heun_sample(exact_velocity_fn(mixture), x, steps=3, times=[1.0, 0.0])
    with pytest.raises(ValueError, match="v_fn"):
        flow.euler_sample(lambda x_t, t: x_t[:, :1], x, steps=2)
    with pytest.raises(TypeError, match="^v_fn must return a torch.Tensor"):  # a wrong type
        flow.euler_sample(lambda x_t, t: x_t.tolist(), x, steps=2)
    with pytest.raises(ValueError, match="zeroed"):
        flow.zero_init_time(10, 11)
    student = VelocityMLP(dim=2, hidden=8, depth=1, num_classes=3, guidance_input=True)
    xs, ts, ys = torch.zeros(4, 2), torch.full((4,), 0.5), torch.zeros(4, dtype=torch.long)
    with pytest.raises(TypeError, match="gamma"):
        student(xs, ts, ys)
    with pytest.raises(TypeError, match="gamma"):
        student(xs, ts, ys, torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="gamma"):
        student(xs, ts, ys, torch.full((4,), -1.0))
    with pytest.raises(ValueError, match="gamma"):
        VelocityMLP(dim=2, hidden=8, depth=1, num_classes=3)(xs, ts, ys, torch.ones(4))
    with pytest.raises(TypeError, match="dtype"):
        VelocityMLP(dim=2, hidden=8, depth=1)(xs.double(), ts)
    with pytest.raises(ValueError, match="gamma"):
        flow.guided_velocity_target(
            VelocityMLP(dim=2, hidden=8, depth=1, num_classes=3),
            xs,
            ts,
            ys,
            torch.full((4,), float("inf")),
        )


# ---- the chapter's recipes ----------------------------------------------------------------------------------


def test_the_chapter_11_recipes(monkeypatch):
    """ch11-velocity is flow.train_velocity with the lab's settings; ch11-student starts from its teacher's
    weights and distils it with flow.train_student."""
    from diffcourse import recipes

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    by_hand = VelocityMLP(dim=2, hidden=128, depth=4, num_classes=3)
    flow.train_velocity(
        by_hand,
        three_blobs(),
        steps=3,
        batch_size=512,
        lr=3e-3,
        p_uncond=0.1,
        seed=0,
        progress=False,
    )
    teacher = recipes.trained("ch11-velocity", "quick", cpu, cache=False, progress=False, steps=3)
    assert all(
        torch.equal(a, b)
        for a, b in zip(by_hand.state_dict().values(), teacher.state_dict().values())
    )
    asked = []

    def fake_trained(name, budget=None, device=None, **kwargs):
        asked.append(name)
        return teacher

    monkeypatch.setattr(recipes, "trained", fake_trained)
    recipe = recipes.get("ch11-student", "quick", steps=2, lr=1e-12)
    assert recipe.teacher == "ch11-velocity" and tuple(recipe.gamma_range) == (0.5, 4.5)
    student, losses = recipe.train(cpu, progress=False)
    assert asked == ["ch11-velocity"] and len(losses) == 2 and student.guidance_input
    shared = {k: v for k, v in student.state_dict().items() if not k.startswith("gamma_mlp")}
    assert all(torch.allclose(v, teacher.state_dict()[k], atol=1e-6) for k, v in shared.items())


def test_exact_cfg_velocity_fn_and_counted_calls():
    from diffcourse.mixture import exact_cfg_velocity_fn

    mixture = three_blobs(dtype=F64)
    x, t = torch.randn(50, 2, generator=torch.Generator().manual_seed(19), dtype=F64), full(50, 0.3)
    cond, uncond = (
        flow.CountedFn(exact_velocity_fn(mixture, 1)),
        flow.CountedFn(exact_velocity_fn(mixture)),
    )
    expected = flow.velocity_cfg_fn(cond, uncond, 2.0)(x, t)
    torch.testing.assert_close(exact_cfg_velocity_fn(mixture, 1, 2.0)(x, t), expected)
    assert cond.calls == uncond.calls == 1
    flow.heun_sample(flow.velocity_cfg_fn(cond, uncond, 2.0), x, steps=3, progress=False)
    assert cond.calls == uncond.calls == 1 + 6
    with pytest.raises(TypeError, match="^y must be an int"):
        exact_cfg_velocity_fn(mixture, None, 2.0)


def test_velocity_gap_to_score_is_tiny_for_the_exact_velocity_and_not_for_a_wrong_one():
    m = three_blobs(dtype=torch.float64)
    x = 2 * torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    times = (0.0, 0.3, 0.9)
    v = exact_velocity_fn(m, 0)
    assert flow.velocity_gap_to_score(v, m, 0, x, times) < 1e-9
    wrong = lambda x_t, t: 1.1 * v(x_t, t)  # noqa: E731
    assert flow.velocity_gap_to_score(wrong, m, 0, x, times) > 1e-2
    with pytest.raises(ValueError, match="times"):
        flow.velocity_gap_to_score(v, m, 0, x, (0.5, 1.0))
    with pytest.raises(TypeError, match="^x must be a floating-point"):
        flow.velocity_gap_to_score(v, m, 0, x.long(), times)


def test_velocity_gap_to_eps_of_eq_170_in_both_forms():
    from diffcourse.mixture import exact_cfg_eps_fn, exact_cfg_velocity_fn

    m, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    x = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    v3, e3 = exact_cfg_velocity_fn(m, 0, 3.0), exact_cfg_eps_fn(m, s, 0, 3.0)
    assert flow.velocity_gap_to_eps(v3, e3, s, x, range(0, 50, 7)) < 1e-9
    e2 = exact_cfg_eps_fn(m, s, 0, 2.0)  # another scale: another rule
    assert flow.velocity_gap_to_eps(v3, e2, s, x, [10, 25]) > 1e-2
    with pytest.raises(ValueError, match="steps"):
        flow.velocity_gap_to_eps(v3, e3, s, x, [50])


def test_relative_velocity_error_is_zero_exact_one_for_zero_and_reads_y():
    m = three_blobs(dtype=F64)
    v = exact_velocity_fn(m)
    times = [0.1, 0.5, 0.9]
    assert (flow.relative_velocity_error(v, v, m, times, n=500) < 1e-12).all()
    zero = flow.relative_velocity_error(lambda x, t: torch.zeros_like(x), v, m, times, n=500)
    torch.testing.assert_close(zero, torch.ones(3, dtype=zero.dtype), rtol=0, atol=1e-9)
    # 1.1 x the reference: RMS(0.1 v) / RMS(v) = 0.1 (a ratio of mean squares would give 0.01)
    off = flow.relative_velocity_error(lambda x, t: 1.1 * v(x, t), v, m, times, n=500)
    torch.testing.assert_close(off, torch.full((3,), 0.1, dtype=off.dtype), rtol=0, atol=1e-9)
    # with y, x_t on the path of p(x | y): by hand, from the same generator
    v_c = exact_velocity_fn(m, 0)
    err = flow.relative_velocity_error(v, v_c, m, [0.5], n=500, y=0, seed=3)
    g = torch.Generator().manual_seed(3)
    x0 = m.sample(500, 0, generator=g)[0]
    x_t = flow.interpolate(x0, torch.randn(x0.shape, generator=g, dtype=F64), full(500, 0.5))
    ref = v_c(x_t, full(500, 0.5))
    by_hand = ((v(x_t, full(500, 0.5)) - ref).pow(2).mean() / ref.pow(2).mean()).sqrt()
    assert err[0].item() == pytest.approx(by_hand.item(), rel=1e-6) and err[0] > 0.05  # float32 out


def test_gap_checks_refuse_an_empty_list():
    """An empty list of times, steps or scales compares nothing: a gap of 0 would pass any bound."""
    from diffcourse import claims

    m, s = three_blobs(dtype=F64), cosine_schedule(50)
    v, x = exact_velocity_fn(m), torch.zeros(4, 2, dtype=F64)
    with pytest.raises(ValueError, match="^times must hold at least one"):
        flow.velocity_gap_to_score(v, m, None, x, [])
    with pytest.raises(ValueError, match="^steps must hold at least one"):
        flow.velocity_gap_to_eps(v, exact_eps_fn(m, s), s, x, [])
    with pytest.raises(ValueError, match="^gammas must hold at least one"):
        claims.cfg_score_gap(m, s, 0, [], steps=[10])


def test_relative_velocity_error_needs_points():
    """Found by fuzzing: n = 0 returned NaN."""
    from diffcourse.data import three_blobs

    v = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="^n must be an int >= 1"):
        flow.relative_velocity_error(v, v, three_blobs(), [0.5], n=0)


@pytest.mark.parametrize("sample", [flow.euler_sample, flow.heun_sample])
def test_a_flow_run_whose_velocities_diverge_is_an_error_not_nan_samples(sample):
    def diverging(x, t):
        return torch.where(x[:, :1] > 0, float("inf"), 1.0) * x

    with pytest.raises(ValueError, match=r"^v_fn: .* NaN or infinite values in \d+ of 64"):
        sample(diverging, (64, 2), steps=4, generator=torch.Generator().manual_seed(0))


def test_the_flow_losses_refuse_an_empty_batch():
    """flow_matching_loss returned NaN for an empty batch (a mean over no rows), silently."""
    model = VelocityMLP(dim=2, hidden=8, depth=1, num_classes=3)
    student = VelocityMLP(dim=2, hidden=8, depth=1, num_classes=3, guidance_input=True)
    x0, t, y = torch.empty(0, 2), torch.empty(0), torch.empty(0, dtype=torch.long)
    with pytest.raises(ValueError, match="^x0 must hold at least one sample"):
        flow.flow_matching_loss(model, x0, x0, t, y)
    with pytest.raises(ValueError, match="^x0 must hold at least one sample"):
        flow.distillation_loss(student, model, x0, x0, t, y, t)


def test_the_velocity_gaps_refuse_no_points_and_a_nan_point():
    """No point failed inside torch's max(); a NaN point gave a gap of 0.0 (max(0.0, nan) is 0.0),
    which passes any bound."""
    m, s = three_blobs(dtype=F64), cosine_schedule(50)
    v, e = exact_velocity_fn(m, 0), exact_eps_fn(m, s, 0)
    x = torch.zeros(4, 2, dtype=F64)
    x[1, 0] = float("nan")
    for bad, message in ((x[:0], "^x must hold at least one sample"), (x, "^x holds NaN")):
        with pytest.raises(ValueError, match=message):
            flow.velocity_gap_to_score(v, m, 0, bad, [0.5])
        with pytest.raises(ValueError, match=message):
            flow.velocity_gap_to_eps(v, e, s, bad, [10])
