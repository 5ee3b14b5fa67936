import math

import pytest
import torch

from diffcourse.schedules import (
    Schedule,
    cosine_schedule,
    linear_schedule,
    posterior_mean,
    posterior_variance,
    q_sample,
)


def test_linear_matches_definition():
    s = linear_schedule(1000)
    assert s.betas.shape == (1000,)
    assert math.isclose(float(s.betas[0]), 1e-4) and math.isclose(float(s.betas[-1]), 0.02)
    # evenly spaced between the two (Ho et al.'s linear schedule), not only the right ends
    step = torch.full((999,), (0.02 - 1e-4) / 999, dtype=s.betas.dtype)
    assert torch.allclose(s.betas.diff(), step, rtol=1e-4, atol=0)
    assert torch.allclose(s.alpha_bar, torch.cumprod(1 - s.betas, 0))
    assert float(s.alpha_bar[-1]) < 1e-4


def test_cosine_matches_closed_form():
    T, s_ = 200, 0.008
    s = cosine_schedule(T, s_)
    f = lambda t: math.cos((t / T + s_) / (1 + s_) * math.pi / 2) ** 2
    for t in (0, 50, 150):  # code step t is the book's t + 1
        assert math.isclose(float(s.alpha_bar[t]), f(t + 1) / f(0), rel_tol=1e-9)
    assert (s.alphas > 0).all() and float(s.alpha_bar[-1]) < 1e-6
    assert (s.alpha_bar[1:] < s.alpha_bar[:-1]).all()


def test_q_sample_moments():
    s = cosine_schedule(100)
    x0 = torch.full((200000, 1), 2.0, dtype=torch.float64)
    t = torch.full((200000,), 40)
    x = q_sample(x0, t, s, generator=torch.Generator().manual_seed(0))
    a = float(s.alpha_bar[40])
    assert abs(x.mean().item() - 2 * math.sqrt(a)) < 4 * math.sqrt((1 - a) / 200000)
    assert abs(x.var().item() - (1 - a)) < 0.01


def test_q_sample_with_given_noise_is_the_formula():
    s = linear_schedule(10, 0.01, 0.2)
    x0, eps = torch.randn(3, 2), torch.randn(3, 2)
    t = torch.tensor([0, 5, 9])
    a = s.alpha_bar[t].float()[:, None]
    assert torch.allclose(q_sample(x0, t, s, eps), a.sqrt() * x0 + (1 - a).sqrt() * eps)


def test_bad_input():
    with pytest.raises(ValueError, match="^T must be an int"):
        linear_schedule(0)
    with pytest.raises(TypeError, match="^T must be an int"):  # a float is the wrong type for T
        cosine_schedule(2.5)
    with pytest.raises(ValueError, match="beta"):
        linear_schedule(10, 0.5, 0.1)
    with pytest.raises(ValueError, match="betas"):
        Schedule(torch.tensor([0.1, 1.2]))
    s = linear_schedule(10, 0.01, 0.2)
    with pytest.raises(ValueError, match="^t must lie in"):
        q_sample(torch.zeros(2, 2), torch.tensor([0, 10]), s)
    with pytest.raises(TypeError, match="^t must be a LongTensor"):
        q_sample(torch.zeros(2, 2), torch.tensor([0.0, 1.0]), s)
    with pytest.raises(ValueError, match="eps"):
        q_sample(torch.zeros(2, 2), torch.tensor([0, 1]), s, torch.zeros(2, 3))


def test_ddim_levels():
    from diffcourse.schedules import ddim_levels

    assert ddim_levels(10, 10) == list(range(9, -1, -1))
    assert ddim_levels(200, 5) == [199, 149, 100, 50, 0]
    assert ddim_levels(7, 1) == [6]
    levels = ddim_levels(1000, 25)
    assert len(levels) == 25 and levels[0] == 999 and levels[-1] == 0
    assert all(a > b for a, b in zip(levels, levels[1:]))
    with pytest.raises(ValueError, match="steps"):
        ddim_levels(10, 0)


def test_nsr_interval_brackets_the_ratio():
    from diffcourse.schedules import nsr_interval

    for schedule in (linear_schedule(1000), cosine_schedule(200)):
        lo, hi = nsr_interval(schedule)
        ab = schedule.alpha_bar.double()
        nsr = ((1 - ab) / ab).sqrt()
        assert 1 / 3 <= nsr[lo] and nsr[hi] <= 3  # the ends are inside
        assert (lo == 0 or nsr[lo - 1] < 1 / 3) and (hi == len(ab) - 1 or nsr[hi + 1] > 3)
        assert ((nsr[lo : hi + 1] >= 1 / 3) & (nsr[lo : hi + 1] <= 3)).all()
    assert nsr_interval(cosine_schedule(200), 0.0, 1e9) == (0, 199)
    with pytest.raises(ValueError, match="high"):
        nsr_interval(cosine_schedule(200), 3.0, 1.0)
    with pytest.raises(ValueError, match="low and high"):
        nsr_interval(cosine_schedule(200), 1e6, 1e7)
    with pytest.raises(TypeError, match="schedule"):
        nsr_interval("cosine")


def test_q_sample_at_is_q_sample_seeded_by_the_level():
    from diffcourse.schedules import q_sample_at

    s = linear_schedule(100)
    x0 = torch.randn(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    x_t, t = q_sample_at(x0, 40, s)
    assert t.dtype == torch.long and t.tolist() == [40] * 5
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(40))
    a = s.alpha_bar[40]
    assert torch.allclose(x_t, a.sqrt() * x0 + (1 - a).sqrt() * eps)  # Luo eq. 70 by hand
    again, _ = q_sample_at(x0, 40, s, seed=7)
    assert not torch.equal(again, x_t)
    with pytest.raises(ValueError, match="step"):
        q_sample_at(x0, 100, s)
    with pytest.raises(TypeError, match="schedule"):
        q_sample_at(x0, 4, "linear")


def _log_normal(x, mean, var):
    """log N(x; mean, var I) per row, float64."""
    d = x.shape[-1]
    return -0.5 * ((x - mean) ** 2).sum(-1) / var - 0.5 * d * math.log(2 * math.pi * var)


@pytest.mark.parametrize("step", [1, 7, 30, 49])
def test_posterior_is_bayes_rule_on_the_forward_steps(step):
    """q(x_t | x_{t-1}) q(x_{t-1} | x_0) / N(x_{t-1}; mu_q, sigma_q^2 I) is the same for every
    x_{t-1}, and equals q(x_t | x_0): eqs. 84, 85 and 93 are Bayes' rule on two Gaussians."""
    s = cosine_schedule(50)
    g = torch.Generator().manual_seed(step)
    x0, x_t = (
        torch.randn(1, 3, generator=g, dtype=torch.float64),
        torch.randn(1, 3, generator=g).double(),
    )
    z = torch.randn(500, 3, generator=g, dtype=torch.float64)  # candidate x_{t-1}
    a_t, ab_t, ab_prev = (
        float(v) for v in (s.alphas[step], s.alpha_bar[step], s.alpha_bar[step - 1])
    )
    joint = _log_normal(x_t, a_t**0.5 * z, 1 - a_t) + _log_normal(z, ab_prev**0.5 * x0, 1 - ab_prev)
    post = _log_normal(z, posterior_mean(x_t, x0, step, s), posterior_variance(step, s))
    evidence = _log_normal(x_t, ab_t**0.5 * x0, 1 - ab_t)
    assert (joint - post - evidence).abs().max() < 1e-9


def test_posterior_at_the_last_step_and_bad_input():
    s = cosine_schedule(10)
    x_t, x0 = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    assert posterior_variance(0, s) == 0  # alpha_bar_0 is 1 before the first step
    torch.testing.assert_close(posterior_mean(x_t, x0, 0, s), x0, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="^step"):
        posterior_variance(10, s)
    with pytest.raises(ValueError, match="and x0 "):
        posterior_mean(x_t, x0[:3], 3, s)
    with pytest.raises(TypeError, match="^step"):
        posterior_mean(x_t, x0, 2.0, s)


def test_steps_one_per_row_and_integer():
    from diffcourse.schedules import q_sample_at

    s = cosine_schedule(20)
    x = torch.zeros(2, 3)
    with pytest.raises(TypeError, match="^t must be an integer tensor"):
        s.gather("alpha_bar", torch.tensor([1.0, 2.0]), x)
    with pytest.raises(ValueError, match=r"^t must have shape \(2,\)"):  # was: a [3, 1] result
        s.gather("alpha_bar", torch.tensor([1, 2, 3]), x)
    with pytest.raises(ValueError, match="^x0 must have a batch dimension"):
        q_sample_at(torch.tensor(1.0), 3, s)
