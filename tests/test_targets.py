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
