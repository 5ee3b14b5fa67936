import torch
from conftest import random_mixture

from diffcourse import targets
from diffcourse.schedules import cosine_schedule, q_sample


def test_round_trips():
    x_t, v = torch.randn(6, 2, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)
    for a in (0.9, 0.3, torch.tensor([[0.5]], dtype=torch.float64)):
        assert torch.allclose(targets.score_to_eps(targets.eps_to_score(v, a), a), v)
        assert torch.allclose(targets.x0_to_score(x_t, targets.score_to_x0(x_t, v, a), a), v)
        assert torch.allclose(targets.x0_to_eps(x_t, targets.eps_to_x0(x_t, v, a), a), v)
        # the three routes between the targets agree
        assert torch.allclose(
            targets.eps_to_x0(x_t, v, a), targets.score_to_x0(x_t, targets.eps_to_score(v, a), a)
        )


def test_true_noise_maps_to_true_x0():
    s = cosine_schedule(50)
    x0, eps = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    t = torch.full((4,), 30)
    x_t = q_sample(x0, t, s, eps)
    a = float(s.alpha_bar[30])
    assert torch.allclose(targets.eps_to_x0(x_t, eps, a), x0)
    assert torch.allclose(targets.x0_to_eps(x_t, x0, a), eps)


def test_v_is_its_definition_and_turns_back_into_the_noise():
    """v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho) from the true noise and x0, and back."""
    s = cosine_schedule(50)
    x0, eps = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    for step in (0, 30, 49):
        x_t, a = q_sample(x0, torch.full((4,), step), s, eps), float(s.alpha_bar[step])
        v = targets.eps_to_v(x_t, eps, a)
        assert torch.allclose(v, a**0.5 * eps - (1 - a) ** 0.5 * x0)
        assert torch.allclose(targets.v_to_eps(x_t, v, a), eps)
    assert torch.equal(targets.v_to_eps(x_t, v, 1.0), v)  # no noise: v is eps


def test_tweedie_on_one_gaussian():
    """For x0 ~ N(mu, s^2 I), E[x0 | x_t] from Tweedie equals the Gaussian posterior mean."""
    mix = random_mixture(2, (1,), seed=1)
    mu, cov = mix.means[0], mix.covs[0]
    a = 0.4
    x_t = torch.randn(5, 2, dtype=torch.float64)
    x0_hat = targets.score_to_x0(x_t, mix.diffuse(a).score(x_t), a)
    # posterior mean of x0 given x_t = sqrt(a) x0 + sqrt(1-a) eps
    S_t = a * cov + (1 - a) * torch.eye(2, dtype=torch.float64)
    gain = (a**0.5) * cov @ torch.linalg.inv(S_t)
    expected = mu + (x_t - a**0.5 * mu) @ gain.T
    assert torch.allclose(x0_hat, expected)


# ---- bad input (issue 17): alpha_bar where a formula divides by zero, integer tensors -------------
import math  # noqa: E402

import pytest  # noqa: E402

# the conversions and the ends of [0, 1] each needs open: 1 where it divides by 1 - alpha_bar,
# 0 where it divides by sqrt(alpha_bar)
_CONVERSIONS = [
    ("eps_to_score", 1, (0.0, 0.5)),
    ("score_to_eps", 1, (0.0, 0.5, 1.0)),
    ("score_to_x0", 2, (0.5, 1.0)),
    ("x0_to_score", 2, (0.0, 0.5)),
    ("eps_to_x0", 2, (0.5, 1.0)),
    ("x0_to_eps", 2, (0.0, 0.5)),
    ("eps_to_v", 2, (0.5, 1.0)),
    ("v_to_eps", 2, (0.0, 0.5, 1.0)),
]


@pytest.mark.parametrize("name, n_tensors, valid", _CONVERSIONS, ids=[c[0] for c in _CONVERSIONS])
def test_conversions_refuse_levels_they_cannot_use_and_integer_tensors(name, n_tensors, valid):
    fn = getattr(targets, name)
    args = [torch.randn(4, 2) for _ in range(n_tensors)]
    for a in (-0.5, 0.0, 1.0, 1.5, math.nan, math.inf):
        if a in valid:
            assert torch.isfinite(fn(*args, a)).all(), (name, a)
            continue
        with pytest.raises(ValueError, match="^alpha_bar must"):
            fn(*args, a)
    ends = torch.tensor([[min(valid)], [max(valid)]]).expand(2, 2).reshape(4, 1)
    assert torch.isfinite(fn(*args, ends)).all()  # a tensor at the ends allowed
    if len(valid) < 3:  # a tensor holding the end that is refused
        bad = torch.tensor([[0.5], [0.5], [1.0 if 1.0 not in valid else 0.0], [0.5]])
        with pytest.raises(ValueError, match="^alpha_bar must lie in"):
            fn(*args, bad)
    with pytest.raises(TypeError, match="^alpha_bar"):
        fn(*args, torch.tensor([1]))  # an integer tensor of levels
    with pytest.raises(TypeError, match="^alpha_bar"):
        fn(*args, "0.5")
    ints = [a.round().long() for a in args]  # integer data would be truncated
    with pytest.raises(TypeError, match="must be a floating-point tensor"):
        fn(*ints, 0.5)


# ---- posterior_means: the brute-force E[x0 | x_t] and E[eps | x_t] of chapter 1's lab --------------
from diffcourse.targets import posterior_means  # noqa: E402


def test_posterior_means_of_two_points_by_hand():
    """Two pool points: the weights are the two Gaussian likelihoods q(x_t | x0_j), normalised."""
    a = 0.6
    pool = torch.tensor([[0.0, 0.0], [1.0, -1.0]], dtype=torch.float64)
    x_t = torch.tensor([[0.3, 0.2], [0.9, -0.4]], dtype=torch.float64)
    lik = torch.exp(-((x_t[:, None] - a**0.5 * pool[None]) ** 2).sum(-1) / (2 * (1 - a)))
    w = lik / lik.sum(1, keepdim=True)
    x0_mean, eps_mean = posterior_means(x_t, pool, a)
    assert torch.allclose(x0_mean, w @ pool)
    assert torch.allclose(eps_mean, (x_t - a**0.5 * (w @ pool)) / (1 - a) ** 0.5)


def test_posterior_means_take_one_level_per_row():
    """A level per row of x_t, as schedule.alpha_bar[t]: each row's answer is its own level's, also
    where the pool has as many points as x_t has rows (found by review: the levels ran along the
    pool's axis)."""
    gen = torch.Generator().manual_seed(0)
    pool = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    x_t = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    levels = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    x0_mean, eps_mean = posterior_means(x_t, pool, levels)
    for i, a in enumerate(levels.tolist()):
        x0_i, eps_i = posterior_means(x_t[i : i + 1], pool, a)
        assert torch.allclose(x0_mean[i], x0_i[0]) and torch.allclose(eps_mean[i], eps_i[0])


def test_posterior_means_match_tweedie_on_one_gaussian():
    """A large pool from N(mu, s^2 I): the averages approach Tweedie's answer from the exact score."""
    mix = random_mixture(2, (1,), seed=3)
    pool, _ = mix.sample(20000, generator=torch.Generator().manual_seed(0))
    x_t = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    a = 0.3
    x0_mean, eps_mean = posterior_means(x_t, pool, a)
    score = mix.diffuse(a).score(x_t)
    exact_x0, exact_eps = targets.score_to_x0(x_t, score, a), targets.score_to_eps(score, a)
    assert (x0_mean - exact_x0).norm() / exact_x0.norm() < 0.03
    assert (eps_mean - exact_eps).norm() / exact_eps.norm() < 0.03


def test_posterior_means_bad_input():
    x = torch.randn(3, 2)
    with pytest.raises(TypeError, match="^pool"):
        posterior_means(x, torch.ones(4, 2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="^x_t and pool"):
        posterior_means(x, torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match="^alpha_bar"):
        posterior_means(x, torch.randn(4, 2), 1.0)


def test_alpha_bar_one_per_sample_runs_along_the_batch():
    """schedule.alpha_bar[t] has shape [N]: each sample gets its own level, also when N equals the
    number of features (where broadcasting [N] as it is would run along the features instead)."""
    x_t, eps = torch.ones(2, 2, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    a = torch.tensor([0.25, 1.0], dtype=torch.float64)
    want = torch.tensor([[2.0, 2.0], [1.0, 1.0]], dtype=torch.float64)  # x_t / sqrt(alpha_bar)
    torch.testing.assert_close(targets.eps_to_x0(x_t, eps, a), want)
    torch.testing.assert_close(targets.eps_to_x0(x_t, eps, a[:, None]), want)
    x3 = torch.ones(2, 3, 4, dtype=torch.float64)  # images: one level per image
    out = targets.x0_to_eps(x3, torch.zeros_like(x3), torch.tensor([0.75, 0.0], dtype=x3.dtype))
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([2.0, 1.0], dtype=x3.dtype))
    with pytest.raises(ValueError, match="^alpha_bar must be one level"):
        targets.eps_to_x0(x_t, eps, torch.full((3,), 0.5, dtype=torch.float64))
    with pytest.raises(ValueError, match="^alpha_bar must be one level"):
        targets.eps_to_x0(x_t, eps, torch.full((2, 2), 0.5, dtype=torch.float64))
