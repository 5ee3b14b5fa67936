import pytest
import torch
from conftest import random_mixture

from diffcourse.guidance import classifier_free_guidance, classifier_guidance


def test_eq166_and_eq170_at_gamma_one_give_the_conditional_score():
    mix = random_mixture(3, (2, 3), seed=11).diffuse(0.4)
    x = torch.randn(40, 3, dtype=torch.float64)
    for c in range(mix.num_classes):
        cond, uncond = mix.score(x, c), mix.score(x)
        g166 = classifier_guidance(uncond, mix.classifier_grad(x, c), 1.0)
        assert ((g166 - cond).abs().max() / cond.abs().max()).item() < 1e-8
        assert torch.equal(classifier_free_guidance(cond, uncond, 1.0), cond)


def test_gamma_zero_ignores_y_and_rules_are_linear():
    a, b = torch.randn(5, 2), torch.randn(5, 2)
    assert torch.equal(classifier_free_guidance(a, b, 0.0), b)
    assert torch.equal(classifier_guidance(b, a, 0), b)
    assert torch.allclose(classifier_free_guidance(a, b, 3.0), b + 3.0 * (a - b))
    assert torch.allclose(classifier_guidance(b, a, 2.5), b + 2.5 * a)


def test_cfg_equals_classifier_guidance_with_implicit_classifier_eq168():
    """eq. 168-170: CFG is classifier guidance whose classifier gradient is cond - uncond."""
    mix = random_mixture(2, (1, 2), seed=2).diffuse(0.6)
    x = torch.randn(30, 2, dtype=torch.float64)
    cond, uncond = mix.score(x, 1), mix.score(x)
    for gamma in (0.0, 0.5, 2.0, 7.0):
        assert torch.allclose(
            classifier_free_guidance(cond, uncond, gamma),
            classifier_guidance(uncond, mix.classifier_grad(x, 1), gamma),
            rtol=1e-10,
            atol=1e-12,
        )


@pytest.mark.parametrize("fn", [classifier_guidance, classifier_free_guidance])
def test_bad_input(fn):
    a = torch.randn(4, 2)
    with pytest.raises(ValueError, match="gamma"):
        fn(a, a, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        fn(a, a, float("inf"))
    with pytest.raises(TypeError, match="gamma"):
        fn(a, a, "2")
    with pytest.raises(ValueError, match="shape"):
        fn(a, torch.randn(4, 3), 1.0)
    with pytest.raises(TypeError, match="dtype"):
        fn(a, a.double(), 1.0)
    with pytest.raises(TypeError):
        fn(a, [1.0, 2.0], 1.0)


# ---- the wrappers -----------------------------------------------------------------------------------
import math  # noqa: E402

from diffcourse.guidance import (  # noqa: E402
    classifier_grad_fn,
    classifier_guided_eps_fn,
    skip_first_step,
)
from diffcourse.mixture import exact_classifier_grad_fn, exact_eps_fn  # noqa: E402
from diffcourse.models import MLPClassifier, MLPDenoiser  # noqa: E402
from diffcourse.samplers import ddpm_sample, ddpm_step  # noqa: E402
from diffcourse.schedules import cosine_schedule  # noqa: E402


def test_classifier_grad_fn_against_finite_differences():
    torch.manual_seed(0)
    clf = MLPClassifier(dim=2, T=20, num_classes=3, hidden=16, depth=2).double()
    x = torch.randn(4, 2, dtype=torch.float64)
    t = torch.tensor([0, 5, 10, 19])
    y = torch.tensor([0, 1, 2, 1])
    g = classifier_grad_fn(clf, y)(x, t)
    h = 1e-6
    for d in range(2):
        e = torch.zeros_like(x)
        e[:, d] = h
        fd = (clf.log_prob(x + e, t, y) - clf.log_prob(x - e, t, y)) / (2 * h)
        assert torch.allclose(g[:, d], fd, rtol=1e-6, atol=1e-8)
    with torch.no_grad():  # works inside a sampler's no_grad too
        assert torch.equal(classifier_grad_fn(clf, y)(x, t), g)


def test_exact_guided_eps_at_gamma_one_is_the_conditional_eps():
    mix = random_mixture(2, (2, 1), seed=5)
    s = cosine_schedule(30)
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0, 3, 10, 10, 20, 29])
    guided = classifier_guided_eps_fn(
        exact_eps_fn(mix, s), exact_classifier_grad_fn(mix, s, 1), s, 1.0
    )
    cond = exact_eps_fn(mix, s, y=1)(x, t)
    assert ((guided(x, t) - cond).abs().max() / cond.abs().max()).item() < 1e-8


def test_guided_sampler_with_gamma_zero_is_the_unconditional_sampler():
    torch.manual_seed(0)
    s = cosine_schedule(20)
    model = MLPDenoiser(dim=2, T=20, hidden=16, depth=2)
    clf = MLPClassifier(dim=2, T=20, num_classes=2, hidden=16, depth=2)
    y = torch.zeros(50, dtype=torch.long)
    plain = ddpm_sample(
        model.eps_fn(), (50, 2), s, generator=torch.Generator().manual_seed(3), progress=False
    )
    guided = ddpm_sample(
        classifier_guided_eps_fn(model.eps_fn(), classifier_grad_fn(clf, y), s, 0.0),
        (50, 2),
        s,
        generator=torch.Generator().manual_seed(3),
        progress=False,
    )
    assert torch.equal(plain, guided)
    pushed = ddpm_sample(
        classifier_guided_eps_fn(model.eps_fn(), classifier_grad_fn(clf, y), s, 3.0),
        (50, 2),
        s,
        generator=torch.Generator().manual_seed(3),
        progress=False,
    )
    assert not torch.allclose(plain, pushed)


def test_guided_eps_fn_bad_gamma():
    s = cosine_schedule(10)
    with pytest.raises(ValueError, match="gamma"):
        classifier_guided_eps_fn(lambda x, t: x, lambda x, t: x, s, -0.5)


def test_skip_first_step_zeroes_the_gradient_at_t_equal_T_only():
    s = cosine_schedule(20)
    grad = lambda x, t: x + t[:, None, None, None]  # noqa: E731 (image-shaped)
    x, t = torch.ones(4, 1, 2, 2), torch.tensor([0, 7, 18, 19])
    out = skip_first_step(grad, s)(x, t)
    assert torch.equal(out[:3], grad(x, t)[:3]) and torch.equal(out[3], torch.zeros(1, 2, 2))
    with pytest.raises(TypeError, match="^grad_fn"):
        skip_first_step("grad", s)
    with pytest.raises(TypeError, match="schedule"):
        skip_first_step(grad, 20)
    with pytest.raises(ValueError, match=r"^t must lie in 0\.\.19"):
        skip_first_step(grad, s)(x, torch.full((4,), 20))


def test_the_first_step_multiplies_the_gradient_by_gamma_beta_T_over_sqrt_alpha_T():
    """Why skip_first_step exists: on cosine_schedule(200) (beta_T clipped at 0.999) the guided DDPM
    step from x_T moves its mean by gamma beta_T / sqrt(alpha_T) times the gradient, 253 at gamma = 8."""
    s = cosine_schedule(200)
    const = lambda x, t: torch.full_like(x, 0.01)  # noqa: E731
    eps = lambda x, t: torch.zeros_like(x)  # noqa: E731
    x, t = torch.zeros(3, 2, dtype=torch.float64), torch.full((3,), 199)
    moved = {}
    for name, g in {"all": const, "skip": skip_first_step(const, s)}.items():
        guided = classifier_guided_eps_fn(eps, g, s, 8.0)
        moved[name] = ddpm_step(x, guided(x, t), 199, s, None)
    factor = 8.0 * s.betas[-1].item() / s.alphas[-1].sqrt().item()
    assert 252 < factor < 253  # beta_T clipped at 0.999: 8 * 0.999 / sqrt(0.001)
    assert torch.allclose(moved["all"], torch.full_like(x, 0.01 * factor))
    assert torch.equal(moved["skip"], torch.zeros_like(x))


# ---- classifier-free guidance wrappers ----------------------------------------------------------------
from diffcourse.guidance import batched_cfg_eps_fn, classifier_free_eps_fn  # noqa: E402


def _cfg_model():
    torch.manual_seed(0)
    return MLPDenoiser(dim=2, T=20, hidden=16, depth=2, num_classes=3)


def test_batched_cfg_at_gamma_one_is_the_conditional_prediction():
    model = _cfg_model()
    x, t = torch.randn(7, 2), torch.full((7,), 4)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    with torch.no_grad():
        guided = batched_cfg_eps_fn(model, y, 1.0)(x, t)
        cond = model(x, t, y)
        near_one = batched_cfg_eps_fn(model, y, 1.0 + 1e-7)(x, t)  # the stacked pass itself
    assert torch.equal(guided, cond)
    assert torch.allclose(near_one, cond, atol=1e-5)
    with torch.no_grad():  # gamma = 0 is the null-label (unconditional) prediction
        assert torch.equal(batched_cfg_eps_fn(model, y, 0.0)(x, t), model(x, t, None))


def test_batched_and_two_pass_cfg_sample_alike():
    model = _cfg_model()
    s = cosine_schedule(20)
    y = torch.arange(3).repeat(20)
    two = classifier_free_eps_fn(model.eps_fn(y), model.eps_fn(None), 3.0)
    one = batched_cfg_eps_fn(model, y, 3.0)
    a = ddpm_sample(one, (60, 2), s, generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm_sample(two, (60, 2), s, generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_exact_cfg_equals_exact_classifier_guidance():
    mix = random_mixture(2, (2, 1), seed=3)
    s = cosine_schedule(30)
    x, t = torch.randn(8, 2, dtype=torch.float64), torch.tensor([0, 1, 5, 9, 14, 20, 25, 29])
    cfg = classifier_free_eps_fn(exact_eps_fn(mix, s, y=0), exact_eps_fn(mix, s), 4.0)(x, t)
    cg = classifier_guided_eps_fn(
        exact_eps_fn(mix, s), exact_classifier_grad_fn(mix, s, 0), s, 4.0
    )(x, t)
    assert torch.allclose(cfg, cg, rtol=1e-8, atol=1e-10)


def test_cfg_wrappers_bad_input():
    model = _cfg_model()
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="model"):
        batched_cfg_eps_fn(MLPDenoiser(dim=2, T=20, hidden=8, depth=1), y, 2.0)
    with pytest.raises(ValueError, match="^y must lie in"):
        batched_cfg_eps_fn(
            model, torch.full((4,), 3), 2.0
        )  # the null label is not a class to ask for
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        batched_cfg_eps_fn(model, torch.zeros(4), 2.0)
    with pytest.raises(ValueError, match="gamma"):
        batched_cfg_eps_fn(model, y, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        classifier_free_eps_fn(model.eps_fn(y), model.eps_fn(None), float("nan"))
    with pytest.raises(ValueError, match="rows"):
        batched_cfg_eps_fn(model, y, 2.0)(torch.randn(5, 2), torch.zeros(5, dtype=torch.long))


# ---- variants of eq. 170 ---------------------------------------------------------------------------
from diffcourse.guidance import autoguidance_eps_fn, interval_cfg_eps_fn, rescaled_cfg  # noqa: E402


def test_rescaled_cfg():
    torch.manual_seed(0)
    cond, uncond = torch.randn(6, 2), torch.randn(6, 2)
    assert torch.equal(
        rescaled_cfg(cond, uncond, 4.0, phi=0.0), classifier_free_guidance(cond, uncond, 4.0)
    )
    assert torch.allclose(rescaled_cfg(cond, uncond, 1.0, phi=0.7), cond)
    full = rescaled_cfg(cond, uncond, 4.0, phi=1.0)
    assert torch.allclose(
        full.std(dim=1), cond.std(dim=1), atol=1e-6
    )  # each sample's scale is cond's
    with pytest.raises(ValueError, match="phi"):
        rescaled_cfg(cond, uncond, 2.0, phi=1.5)


def test_interval_guidance_acts_only_inside_its_interval():
    cond_fn = lambda x, t: x + 1.0  # noqa: E731
    uncond_fn = lambda x, t: x - 1.0  # noqa: E731
    x, t = torch.zeros(4, 2), torch.tensor([0, 5, 10, 19])
    out = interval_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 5, 10)(x, t)
    cfg = classifier_free_eps_fn(cond_fn, uncond_fn, 3.0)(x, t)
    assert torch.equal(out[1:3], cfg[1:3]) and torch.equal(out[[0, 3]], cond_fn(x, t)[[0, 3]])
    calls = []
    counting = lambda x, t: calls.append(1) or x  # noqa: E731
    interval_cfg_eps_fn(cond_fn, counting, 3.0, 5, 10)(x, torch.full((4,), 15))
    assert not calls  # outside: one pass only
    with pytest.raises(ValueError, match="t_low"):
        interval_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 10, 5)


def test_autoguidance_is_eq170_with_a_weak_model():
    good = lambda x, t: 2 * x  # noqa: E731
    weak = lambda x, t: x  # noqa: E731
    x, t = torch.randn(5, 2), torch.zeros(5, dtype=torch.long)
    assert torch.allclose(autoguidance_eps_fn(good, weak, 2.5)(x, t), 2.5 * 2 * x + (1 - 2.5) * x)


# ---- CFG++, adaptive projected guidance, dynamic thresholding -------------------------------------------
from diffcourse.guidance import apg_eps_fn, cfgpp_eps_fn, dynamic_threshold_eps_fn  # noqa: E402
from diffcourse.samplers import ddim_sample  # noqa: E402
from diffcourse.schedules import _gather  # noqa: E402
from diffcourse.targets import eps_to_x0, x0_to_eps  # noqa: E402


def _eps_with_x0(x0: torch.Tensor, s):
    """An eps_fn whose clean estimate x0_hat is ``x0`` (one row: every row) at every x_t and t."""
    return lambda x_t, t: x0_to_eps(x_t, x0.expand_as(x_t), _gather(s.alpha_bar, t, x_t))


def _x0_of(eps, x_t, t, s):
    return eps_to_x0(x_t, eps, _gather(s.alpha_bar, t, x_t))


def test_cfgpp_at_lam_zero_is_unconditional_ddim():
    mix = random_mixture(2, (2, 1), seed=6)
    s = cosine_schedule(30)
    noise = torch.randn(80, 2, dtype=torch.float64)
    cond, uncond = exact_eps_fn(mix, s, y=0), exact_eps_fn(mix, s)
    plain = ddim_sample(uncond, noise, s, steps=10, progress=False)
    assert torch.equal(
        ddim_sample(cfgpp_eps_fn(cond, uncond, 0.0), noise, s, steps=10, progress=False), plain
    )
    assert not torch.allclose(
        ddim_sample(cfgpp_eps_fn(cond, uncond, 0.5), noise, s, steps=10, progress=False), plain
    )


def test_cfgpp_ddim_is_the_papers_step_and_not_cfg():
    """By hand, CFG++'s DDIM (eta = 0): x0_hat from eps_u + lam (eps_c - eps_u), renoised along eps_u."""
    mix = random_mixture(2, (2, 1), seed=6)
    s = cosine_schedule(30)
    cond, uncond = exact_eps_fn(mix, s, y=1), exact_eps_fn(mix, s)
    noise = torch.randn(50, 2, dtype=torch.float64)
    lam, levels = 0.6, [29, 22, 14, 7, 0]  # the levels ddim_sample keeps for steps=5
    x = noise
    for i, step in enumerate(levels):
        t = torch.full((50,), step)
        e_c, e_u = cond(x, t), uncond(x, t)
        a_t, a_s = (
            float(s.alpha_bar[step]),
            float(s.alpha_bar[levels[i + 1]]) if i + 1 < len(levels) else 1.0,
        )
        x = a_s**0.5 * eps_to_x0(x, e_u + lam * (e_c - e_u), a_t) + (1 - a_s) ** 0.5 * e_u
    out = ddim_sample(cfgpp_eps_fn(cond, uncond, lam), noise, s, steps=5, progress=False)
    assert torch.allclose(out, x, rtol=1e-10, atol=1e-12)
    cfg = ddim_sample(classifier_free_eps_fn(cond, uncond, lam), noise, s, steps=5, progress=False)
    assert (out - cfg).abs().max() > 1e-3  # same x0 part, other direction: not CFG


def test_cfgpp_shapes_and_bad_input():
    cond, uncond = (lambda x, t: 0.5 * x + 0.1), (lambda x, t: 0.3 * x)  # noqa: E731
    x, t = torch.randn(3, 1, 4, 4), torch.full((3,), 5)
    e_x0, e_dir = cfgpp_eps_fn(cond, uncond, 0.7)(x, t)
    assert e_x0.shape == e_dir.shape == x.shape
    assert torch.allclose(e_x0, classifier_free_eps_fn(cond, uncond, 0.7)(x, t)) and torch.equal(
        e_dir, uncond(x, t)
    )
    out = ddim_sample(
        cfgpp_eps_fn(cond, uncond, 0.7), (3, 1, 4, 4), cosine_schedule(10), progress=False
    )
    assert out.shape == x.shape and torch.isfinite(out).all()
    for lam in (-0.1, 1.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lam"):
            cfgpp_eps_fn(cond, uncond, lam)
    for lam in ("0.5", True, None):
        with pytest.raises(TypeError, match="lam"):
            cfgpp_eps_fn(cond, uncond, lam)
    with pytest.raises(TypeError, match="pair"):
        ddpm_sample(
            cfgpp_eps_fn(cond, uncond, 0.7), (3, 1, 4, 4), cosine_schedule(10), progress=False
        )


@pytest.mark.parametrize("shape", [(6, 2), (4, 3, 5, 5)])
def test_apg_without_its_changes_is_cfg(shape):
    """eta = 1, r = inf, beta = 0: eq. 170 in x0 space is eq. 170 in noise space."""
    torch.manual_seed(0)
    s = cosine_schedule(50)
    w_c, w_u = (
        torch.randn(shape[1:], dtype=torch.float64),
        torch.randn(shape[1:], dtype=torch.float64),
    )
    cond, uncond = (lambda x, t: w_c * x + 0.2), (lambda x, t: w_u * x - 0.1)  # noqa: E731
    x, t = torch.randn(shape, dtype=torch.float64), torch.linspace(0, 49, shape[0]).long()
    apg = apg_eps_fn(cond, uncond, s, 4.0, eta=1.0)
    for _ in range(2):  # no state without momentum
        assert torch.allclose(
            apg(x, t), classifier_free_eps_fn(cond, uncond, 4.0)(x, t), rtol=1e-9, atol=1e-9
        )
    assert torch.equal(
        apg_eps_fn(cond, uncond, s, 1.0, eta=0.3, r=0.5, beta=-0.5)(x, t), cond(x, t)
    )
    out = ddim_sample(
        apg_eps_fn(cond, uncond, s, 4.0, eta=0.0, r=2.0, beta=-0.5),
        shape,
        s,
        steps=5,
        progress=False,
    )
    assert out.shape == shape and torch.isfinite(out).all()


@pytest.mark.parametrize("shape", [(2, 2), (2, 2, 1, 1)])
def test_apg_projects_on_the_conditional_prediction_and_clips_per_sample(shape):
    """Two samples, by hand. Sample 1: D_c = (2, 0), D_u = (1, -1), so Delta = (1, 1); clipped to
    norm 1; its part along D_c is (1, 0)/sqrt 2. Sample 2: Delta = (0, 4) lies along D_c = (0, 1)."""
    s = cosine_schedule(20)
    d_c = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64).reshape(shape)
    d_u = torch.tensor([[1.0, -1.0], [0.0, -3.0]], dtype=torch.float64).reshape(shape)
    x, t = torch.randn(shape, dtype=torch.float64), torch.tensor([3, 12])
    apg = apg_eps_fn(_eps_with_x0(d_c, s), _eps_with_x0(d_u, s), s, 3.0, eta=0.5, r=1.0)
    h = 2**-0.5
    expected = torch.tensor([[2 + h, 2 * h], [0.0, 2.0]], dtype=torch.float64).reshape(shape)
    assert torch.allclose(_x0_of(apg(x, t), x, t, s), expected, rtol=1e-9, atol=1e-9)


def test_apg_momentum_and_reset():
    s = cosine_schedule(20)
    d_c = torch.tensor([[2.0, 0.0]], dtype=torch.float64)
    d_u = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    x, t = torch.randn(1, 2, dtype=torch.float64), torch.tensor([5])
    apg = apg_eps_fn(_eps_with_x0(d_c, s), _eps_with_x0(d_u, s), s, 3.0, eta=1.0, beta=-0.5)
    first, second = _x0_of(apg(x, t), x, t, s), _x0_of(apg(x, t), x, t, s)
    assert torch.allclose(first, d_c + 2 * (d_c - d_u))
    assert torch.allclose(
        second, d_c + 2 * 0.5 * (d_c - d_u)
    )  # Delta + beta Delta_prev = Delta / 2
    # a running average: Delta_prev is the previous call's replaced update, Delta / 2, so the third
    # is Delta - Delta / 4 = 3/4 Delta (a look-back to the raw Delta would give Delta / 2 again)
    assert torch.allclose(_x0_of(apg(x, t), x, t, s), d_c + 2 * 0.75 * (d_c - d_u))
    apg.reset()
    assert torch.allclose(_x0_of(apg(x, t), x, t, s), first)
    # clipped to r = 1 (|Delta| = sqrt 2): the momentum keeps the unclipped update, so the second
    # call is Delta / 2 (inside the ball), not Delta - Delta / (2 sqrt 2); the third, 3/4 Delta,
    # is clipped back to Delta / sqrt 2
    clip = apg_eps_fn(_eps_with_x0(d_c, s), _eps_with_x0(d_u, s), s, 3.0, eta=1.0, r=1.0, beta=-0.5)
    for factor in (2**-0.5, 0.5, 2**-0.5):
        assert torch.allclose(_x0_of(clip(x, t), x, t, s), d_c + 2 * factor * (d_c - d_u))
    with pytest.raises(ValueError, match="reset"):
        apg(torch.randn(3, 2, dtype=torch.float64), torch.full((3,), 5))


def test_apg_bad_input():
    s, fn = cosine_schedule(10), (lambda x, t: x)  # noqa: E731
    for kwargs, name in [
        ({"gamma": -1.0}, "gamma"),
        ({"eta": float("nan")}, "eta"),
        ({"eta": math.inf}, "eta"),
        ({"r": 0.0}, "r"),
        ({"r": -1.0}, "r"),
        ({"beta": math.inf}, "beta"),
    ]:
        with pytest.raises(ValueError, match=name):
            apg_eps_fn(fn, fn, s, **{"gamma": 2.0, **kwargs})
    with pytest.raises(TypeError, match="eta"):
        apg_eps_fn(fn, fn, s, 2.0, eta="1")
    with pytest.raises(TypeError, match="beta"):
        apg_eps_fn(fn, fn, s, 2.0, beta=None)


@pytest.mark.parametrize("shape", [(2, 400), (2, 4, 10, 10)])
def test_dynamic_thresholding(shape):
    """Sample 1: |x0_hat| <= 1 but for one entry past the 99.5% quantile, so s = 1 and that entry
    alone is clipped to 1 (Imagen's s = max(quantile, 1)). Sample 2: x0_hat spread wide; its x0_hat
    comes back within [-1, 1], reaching 1. Every |x0_hat| within 1: left alone, bit for bit."""
    s = cosine_schedule(20)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    x0[0].view(-1)[7] = 5.0
    x0[1] = 3 * torch.randn(shape[1:], generator=g, dtype=torch.float64)
    x, t = torch.randn(shape, generator=g, dtype=torch.float64), torch.tensor([2, 15])
    eps_fn = _eps_with_x0(x0, s)
    out = dynamic_threshold_eps_fn(eps_fn, s)(x, t)
    torch.testing.assert_close(_x0_of(out, x, t, s)[0], x0[0].clamp(-1, 1), rtol=0, atol=1e-9)
    inside = _eps_with_x0(x0.clamp(-0.99, 0.99), s)  # every |x0_hat| < 1
    assert torch.equal(dynamic_threshold_eps_fn(inside, s)(x, t), inside(x, t))
    back = _x0_of(out, x, t, s)[1]
    assert back.abs().max() <= 1 + 1e-9 and back.abs().max() >= 1 - 1e-9
    # s pinned: the 99.5% quantile of |x0_hat| (not of x0_hat), at least 1 (it is well above 1 here)
    s1 = torch.quantile(x0[1].abs().flatten(), 0.995).clamp(min=1)
    torch.testing.assert_close(back, x0[1].clamp(-s1, s1) / s1, rtol=0, atol=1e-9)
    assert torch.allclose(back.sign(), x0[1].sign())
    with_max = dynamic_threshold_eps_fn(eps_fn, s, percentile=1.0)(
        x, t
    )  # the max: row 1 rescaled too
    assert _x0_of(with_max, x, t, s)[0].abs().max() <= 1 + 1e-9


def test_dynamic_thresholding_keeps_ddim_samples_in_range():
    """DDIM's last step returns x0_hat, so a thresholded high-gamma CFG ends within [-1, 1]. In 2-D
    the 99.5% quantile of two numbers lets the larger pass a little past 1: the max (percentile 1)
    bounds them all."""
    mix = random_mixture(2, (2, 1), seed=6)
    s = cosine_schedule(30)
    cfg = classifier_free_eps_fn(exact_eps_fn(mix, s, y=0), exact_eps_fn(mix, s), 6.0)
    noise = torch.randn(100, 2, dtype=torch.float64)
    assert ddim_sample(cfg, noise, s, steps=10, progress=False).abs().max() > 1.5
    out = ddim_sample(dynamic_threshold_eps_fn(cfg, s, 1.0), noise, s, steps=10, progress=False)
    assert out.abs().max() <= 1 + 1e-9


def test_dynamic_thresholding_bad_percentile():
    s, fn = cosine_schedule(10), (lambda x, t: x)  # noqa: E731
    for p in (0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="percentile"):
            dynamic_threshold_eps_fn(fn, s, percentile=p)
    with pytest.raises(TypeError, match="percentile"):
        dynamic_threshold_eps_fn(fn, s, percentile="99.5")


# ---- chapter 12: independent condition guidance, feedback guidance ---------------------------------------

from diffcourse.guidance import feedback_eps_fn, feedback_scale, independent_condition_eps_fn  # noqa: E402
from diffcourse.mixture import GaussianMixture, exact_log_ratio_fn  # noqa: E402


def test_icg_is_eq170_where_the_random_label_predicts_like_the_null_one():
    """ICG replaces eps(x, t, null) by eps(x, t, y_rand). With a model whose prediction at every label
    other than y is the unconditional one, ICG is eq. 170 on the rows where y_rand != y and the
    conditional prediction on the rows where y_rand = y (gamma c + (1 - gamma) c = c)."""
    mix, s, y0 = random_mixture(2, (1, 2, 1), seed=5), cosine_schedule(40), 1
    cond, uncond = exact_eps_fn(mix, s, y0), exact_eps_fn(mix, s)
    model = lambda x, t, labels: torch.where((labels == y0)[:, None], cond(x, t), uncond(x, t))
    n, gamma = 400, 2.5
    y = torch.full((n,), y0, dtype=torch.long)
    icg = independent_condition_eps_fn(
        model, y, gamma, 3, generator=torch.Generator().manual_seed(0)
    )
    same = icg.labels == y0
    assert 0.2 < same.double().mean() < 0.47  # uniform over 3 classes, drawn once per row
    x, t = torch.randn(n, 2, dtype=torch.float64), torch.full((n,), 17, dtype=torch.long)
    want = torch.where(same[:, None], cond(x, t), classifier_free_eps_fn(cond, uncond, gamma)(x, t))
    assert torch.allclose(icg(x, t), want, rtol=1e-12, atol=1e-12)
    again = independent_condition_eps_fn(
        model, y, gamma, 3, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(again.labels, icg.labels)  # seeded
    assert torch.equal(independent_condition_eps_fn(model, y, 1.0, 3)(x, t), cond(x, t))


def test_icg_bad_input():
    model = lambda x, t, labels: x
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="gamma"):
        independent_condition_eps_fn(model, y, -1.0, 3)
    with pytest.raises(ValueError, match="num_classes"):
        independent_condition_eps_fn(model, y, 2.0, 0)
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        independent_condition_eps_fn(model, y.float(), 2.0, 3)
    with pytest.raises(ValueError, match="^y must lie in"):
        independent_condition_eps_fn(model, y + 3, 2.0, 3)
    with pytest.raises(ValueError, match="^y must lie in"):
        independent_condition_eps_fn(model, y - 1, 2.0, 3)
    with pytest.raises(TypeError, match="^num_classes must be an int"):  # was a ValueError
        independent_condition_eps_fn(model, y, 2.0, 3.0)


def test_feedback_scale_formula_and_clamp():
    log_r = torch.tensor([3.0, 0.0, -0.5, -50.0], dtype=torch.float64)
    pi, top = 0.3, 8.0
    r = log_r.exp()
    want = r / (r - (1 - pi))  # for R well above the clamp
    got = feedback_scale(log_r, pi, top)
    assert torch.allclose(got[:2], want[:2], rtol=1e-12)
    assert abs(got[-1].item() - top) < 1e-9 and (got <= top + 1e-9).all() and (got >= 1).all()
    assert torch.equal(feedback_scale(log_r, 1.0), torch.ones(4, dtype=torch.float64))
    for bad in ({"pi": 0.0}, {"pi": 1.5}, {"max_gamma": 1.0}, {"max_gamma": float("inf")}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            feedback_scale(log_r, **{"pi": 0.5, "max_gamma": 5.0, **bad})
    with pytest.raises(TypeError, match="^pi must be a real"):
        feedback_scale(log_r, "0.5")


def test_feedback_with_a_constant_ratio_is_eq170():
    mix, s = random_mixture(2, (2, 1), seed=9), cosine_schedule(30)
    cond, uncond = exact_eps_fn(mix, s, 0), exact_eps_fn(mix, s)
    log_r, pi = 0.4, 0.6
    gamma = math.exp(log_r) / (math.exp(log_r) - (1 - pi))
    fb = feedback_eps_fn(
        cond, uncond, lambda x, t: torch.full((x.shape[0],), log_r, dtype=x.dtype), pi, 50.0
    )
    x, t = torch.randn(20, 2, dtype=torch.float64), torch.full((20,), 11, dtype=torch.long)
    assert torch.allclose(
        fb(x, t), classifier_free_eps_fn(cond, uncond, gamma)(x, t), rtol=1e-12, atol=1e-12
    )


def test_feedback_guidance_gives_the_score_of_the_sharper_law_it_assumes():
    """The premise of feedback guidance: p(x|y) = pi q(x|y) + (1 - pi) p(x). Build q and p(x) as
    mixtures and p(x|y) as that additive mixture: FBG with the exact ratio p_t(x|y) / p_t(x) then
    returns the exact noise prediction of q at every level, since noising is linear in the law."""
    s, pi = cosine_schedule(60), 0.4
    q = GaussianMixture(
        torch.tensor([[1.5, 0.5], [2.0, -0.5]], dtype=torch.float64),
        0.2 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2),
        torch.tensor([0.7, 0.3], dtype=torch.float64),
        torch.zeros(2, dtype=torch.long),
    )
    p = random_mixture(2, (2, 2), seed=12)  # the unconditional law
    both = GaussianMixture(
        torch.cat([q.means, p.means]),
        torch.cat([q.covs, p.covs]),
        torch.cat([pi * q.weights, (1 - pi) * p.weights]),
        torch.cat(
            [torch.zeros(2, dtype=torch.long), torch.ones(p.num_components, dtype=torch.long)]
        ),
    )
    cond = exact_eps_fn(both, s)  # the whole of `both` is p(x|y) here
    uncond = exact_eps_fn(p, s)

    def log_ratio(x, t):
        a = float(s.alpha_bar[int(t[0])])
        return both.diffuse(a).log_prob(x) - p.diffuse(a).log_prob(x)

    fb = feedback_eps_fn(cond, uncond, log_ratio, pi, max_gamma=1e6)
    x = 2 * torch.randn(300, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for step in (0, 15, 40, 59):
        t = torch.full((300,), step, dtype=torch.long)
        want = exact_eps_fn(q, s)(x, t)
        # where q has almost no mass, R - (1 - pi) = pi q / p is lost to rounding: compare elsewhere
        a = float(s.alpha_bar[step])
        kept = (math.log(pi) + q.diffuse(a).log_prob(x) - p.diffuse(a).log_prob(x)) > math.log(1e-6)
        assert kept.double().mean() > 0.5
        assert ((fb(x, t) - want)[kept].abs().max() / want.abs().max()).item() < 1e-8, step


def test_feedback_with_the_mixtures_exact_ratio_guides_uncertain_samples_more():
    mix, s = random_mixture(2, (1, 1), seed=2), cosine_schedule(40)
    ratio = exact_log_ratio_fn(mix, s, 0)
    x = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2
    t = torch.full((200,), 5, dtype=torch.long)
    gamma = feedback_scale(ratio(x, t), 0.5, 10.0)
    assert gamma.max() - gamma.min() > 1  # it varies: a constant scale would pass the order
    post = mix.diffuse(float(s.alpha_bar[5])).class_log_posterior(x)[:, 0]
    order = post.argsort()
    assert (gamma[order].diff() <= 1e-12).all()  # the surer the class, the less guidance


# ---- guidance with a per-level scale; CFG++ matched to CFG; rescaled CFG as an eps_fn -------------------

from diffcourse.guidance import (  # noqa: E402
    cfgpp_gamma_eff,
    lam_matching,
    per_level_cfg_eps_fn,
    rescaled_cfg_eps_fn,
    rescaled_cfg_v_eps_fn,
)
from diffcourse.schedules import ddim_levels  # noqa: E402


def test_per_level_cfg_scale_forms_and_skips():
    cond_fn = lambda x, t: x + 1.0  # noqa: E731
    calls = []
    uncond_fn = lambda x, t: calls.append(1) or x - 1.0  # noqa: E731
    x = torch.zeros(3, 2)
    gammas = [1.0] * 10
    gammas[4] = 3.0
    for gamma_at in (gammas, {4: 3.0, 5: 1.0, 0: 2.0}, lambda s: 3.0 if s == 4 else 1.0):
        fn = per_level_cfg_eps_fn(cond_fn, uncond_fn, gamma_at)
        assert torch.equal(fn(x, torch.full((3,), 4)), classifier_free_guidance(x + 1, x - 1, 3.0))
        calls.clear()
        assert torch.equal(fn(x, torch.full((3,), 5)), x + 1) and not calls  # gamma 1: one pass
    mixed = per_level_cfg_eps_fn(cond_fn, uncond_fn, {0: 2.0, 4: 3.0, 5: 1.0})(
        x, torch.tensor([0, 4, 5])
    )
    rows = [classifier_free_guidance(x + 1, x - 1, g)[i] for i, g in enumerate((2.0, 3.0, 1.0))]
    assert torch.equal(mixed, torch.stack(rows))
    with pytest.raises(ValueError, match="gamma_at has no scale for step 7"):
        per_level_cfg_eps_fn(cond_fn, uncond_fn, {4: 3.0})(x, torch.full((3,), 7))
    with pytest.raises(ValueError, match=r"gamma_at\[4\]"):
        per_level_cfg_eps_fn(cond_fn, uncond_fn, {4: -3.0})(x, torch.full((3,), 4))
    with pytest.raises(TypeError, match="gamma_at"):
        per_level_cfg_eps_fn(cond_fn, uncond_fn, 3.0)


def test_cfgpp_is_cfg_with_the_per_level_scale():
    """CFG++'s DDIM run at lam equals CFG's DDIM run with gamma_t = cfgpp_gamma_eff(lam) at every
    level (the derivation in its docstring), and lam_matching sets the middle level's gamma_t."""
    from diffcourse.data import three_blobs
    from diffcourse.mixture import exact_eps_fn
    from diffcourse.samplers import ddim_sample

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(200)
    cond, uncond = exact_eps_fn(mix, s, 0), exact_eps_fn(mix, s)
    noise = torch.randn(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    g_eff = cfgpp_gamma_eff(s, 20, 0.3)
    levels = ddim_levels(200, 20)
    assert sorted(g_eff) == sorted(levels) and g_eff[0] == 0.3  # the last step: gamma_t = lam
    assert all(g_eff[t] > 0.3 for t in levels[:-1])
    pp = ddim_sample(cfgpp_eps_fn(cond, uncond, 0.3), noise, s, steps=20, progress=False)
    matched = ddim_sample(
        per_level_cfg_eps_fn(cond, uncond, g_eff), noise, s, steps=20, progress=False
    )
    plain = ddim_sample(
        classifier_free_eps_fn(cond, uncond, 0.3), noise, s, steps=20, progress=False
    )
    assert (pp - matched).abs().max() < 1e-9 and (pp - plain).abs().max() > 0.1
    lam = lam_matching(s, 50, 3.0)
    assert cfgpp_gamma_eff(s, 50, lam)[ddim_levels(200, 50)[25]] == pytest.approx(3.0, rel=1e-12)
    assert abs(lam - 0.182) < 5e-4  # chapter 8's figure


def test_rescaled_cfg_eps_fn_is_the_rule_per_call():
    g = torch.Generator().manual_seed(3)
    c, u = torch.randn(4, 1, 4, 4, generator=g), torch.randn(4, 1, 4, 4, generator=g)
    cond_fn, uncond_fn = (lambda x, t: c), (lambda x, t: u)
    t = torch.zeros(4, dtype=torch.long)
    assert torch.equal(
        rescaled_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 0.7)(c, t), rescaled_cfg(c, u, 3.0, 0.7)
    )
    assert torch.equal(
        rescaled_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 0.0)(c, t),
        classifier_free_eps_fn(cond_fn, uncond_fn, 3.0)(c, t),
    )
    with pytest.raises(ValueError, match="phi"):
        rescaled_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 1.5)


def test_rescaled_cfg_v_eps_fn_rescales_the_v_predictions():
    """Lin et al.'s rule written out: both predictions to v = (eps - sqrt(1 - a) x_t) / sqrt(a),
    eq. 170 there, each sample scaled to v_c's std and mixed by phi, back to noise. It is not the
    rule on eps; phi = 0 is eq. 170 and gamma = 1 the conditional prediction, up to rounding."""
    s = cosine_schedule(50)
    g = torch.Generator().manual_seed(3)
    x, c, u = (torch.randn(4, 1, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    cond_fn, uncond_fn = (lambda x, t: c), (lambda x, t: u)
    t = torch.tensor([0, 10, 30, 49])
    a = s.alpha_bar[t].double().reshape(-1, 1, 1, 1)
    v_c, v_u = ((e - (1 - a).sqrt() * x) / a.sqrt() for e in (c, u))
    v = 3 * v_c - 2 * v_u
    std = lambda e: e.flatten(1).std(1).reshape(-1, 1, 1, 1)  # noqa: E731
    by_hand = a.sqrt() * (0.7 * v * std(v_c) / std(v) + 0.3 * v) + (1 - a).sqrt() * x
    got = rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, s, 3.0, 0.7)(x, t)
    torch.testing.assert_close(got, by_hand)
    on_eps = rescaled_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 0.7)(x, t)
    assert (got - on_eps).abs().max() > 0.1  # the target matters
    cfg = classifier_free_eps_fn(cond_fn, uncond_fn, 3.0)(x, t)
    torch.testing.assert_close(rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, s, 3.0, 0.0)(x, t), cfg)
    torch.testing.assert_close(rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, s, 1.0, 0.7)(x, t), c)
    with pytest.raises(ValueError, match="^phi"):
        rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, s, 3.0, 1.5)
    with pytest.raises(ValueError, match="^gamma"):
        rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, s, -1.0)
    with pytest.raises(TypeError, match="^schedule"):
        rescaled_cfg_v_eps_fn(cond_fn, uncond_fn, "cosine", 3.0)


def test_apg_momentum_cannot_leak_from_one_run_into_the_next():
    """Two sampling runs in a row with the same APG callable, no reset() in between: the same
    samples, as from a fresh callable. Momentum still works within a run (beta changes them)."""
    from diffcourse.data import three_blobs
    from diffcourse.mixture import exact_eps_fn
    from diffcourse.samplers import ddpm_sample

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(40)
    cond, uncond = exact_eps_fn(mix, s, 0), exact_eps_fn(mix, s)
    noise = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    apg = apg_eps_fn(cond, uncond, s, 3.0, eta=0.0, beta=-0.5)
    runs = [ddim_sample(apg, noise, s, steps=10, progress=False) for _ in range(2)]
    fresh = ddim_sample(
        apg_eps_fn(cond, uncond, s, 3.0, eta=0.0, beta=-0.5), noise, s, steps=10, progress=False
    )
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], fresh)
    no_momentum = ddim_sample(
        apg_eps_fn(cond, uncond, s, 3.0, eta=0.0), noise, s, steps=10, progress=False
    )
    assert (runs[0] - no_momentum).abs().max() > 1e-3
    a = ddpm_sample(apg, noise, s, generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm_sample(
        apg, noise[:50], s, generator=torch.Generator().manual_seed(1), progress=False
    )  # another size
    assert a.shape == (200, 2) and b.shape == (50, 2)


from diffcourse.mixture import tilted_log_prob  # noqa: E402


def _tilted_score(mix, x, c, gamma):
    """grad log (p(x|c)^gamma p(x)^(1 - gamma)) by autograd: the tilted law's score, no eq. 166."""
    z = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(tilted_log_prob(mix, z, c, gamma).sum(), z)
    return g


@pytest.mark.parametrize("gamma", [0.5, 2.5, 8.0])
def test_eq166_is_the_score_of_the_tilted_law(gamma):
    """Luo eq. 166 at gamma != 1: grad log p(x) + gamma grad log p(y|x) is the score of
    p(x) p(y|x)^gamma, here taken by autograd of the tilted log-density."""
    mix = random_mixture(3, (2, 3), seed=11).diffuse(0.4)
    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for c in range(mix.num_classes):
        g166 = classifier_guidance(mix.score(x), mix.classifier_grad(x, c), gamma)
        ref = _tilted_score(mix, x, c, gamma)
        assert ((g166 - ref).abs().max() / ref.abs().max()).item() < 1e-8


@pytest.mark.parametrize("gamma", [0.5, 2.5, 8.0])
def test_classifier_guided_eps_fn_is_eq166_in_noise_form(gamma):
    """The noise form, eps_u - gamma sigma_t grad log p(y|x_t), is -sigma_t times the tilted score of
    the noisy mixture at every step: the factor sigma_t, the sign and gamma all checked."""
    mix = random_mixture(2, (2, 1), seed=5)
    s = cosine_schedule(30)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    for step in (0, 7, 18, 29):
        t = torch.full((4,), step)
        guided = classifier_guided_eps_fn(
            exact_eps_fn(mix, s), exact_classifier_grad_fn(mix, s, 1), s, gamma
        )
        a = float(s.alpha_bar[step])
        ref = -((1 - a) ** 0.5) * _tilted_score(mix.diffuse(a), x, 1, gamma)
        assert ((guided(x, t) - ref).abs().max() / ref.abs().max()).item() < 1e-8


# ---- the implicit classifier (chapter 5) -----------------------------------------------------------------

from diffcourse.guidance import implicit_classifier_grad_fn  # noqa: E402


def test_eq167_implicit_classifier_of_exact_predictors_is_the_exact_classifier_gradient():
    mix = random_mixture(3, (2, 1, 2), seed=5)
    s = cosine_schedule(30)
    x, t = torch.randn(9, 3, dtype=torch.float64), torch.tensor([0, 2, 5, 9, 14, 18, 22, 26, 29])
    for c in range(mix.num_classes):
        implicit = implicit_classifier_grad_fn(exact_eps_fn(mix, s, c), exact_eps_fn(mix, s), s)(
            x, t
        )
        exact = exact_classifier_grad_fn(mix, s, c)(x, t)
        assert torch.allclose(implicit, exact, rtol=1e-8, atol=1e-10)


def test_eq168_to_170_classifier_guidance_with_the_implicit_classifier_is_cfg():
    """Eq. 167 into eq. 166 in noise form: the sigma_t of the implicit classifier cancels the one of
    classifier guidance, leaving gamma eps_c + (1 - gamma) eps_u, at every gamma (not only 0 and 1)."""
    model, s = _cfg_model(), cosine_schedule(20)
    x, t = torch.randn(12, 2), torch.arange(12) + 4
    y = torch.tensor([0, 1, 2] * 4)
    implicit = implicit_classifier_grad_fn(model.eps_fn(y), model.eps_fn(), s)
    with torch.no_grad():
        cond, uncond = model(x, t, y), model(x, t, None)
        for gamma in (0.5, 2.5, 4.0, 8.0):
            cg = classifier_guided_eps_fn(model.eps_fn(), implicit, s, gamma)(x, t)
            assert torch.allclose(cg, gamma * cond + (1 - gamma) * uncond, rtol=1e-5, atol=1e-5)
            assert torch.allclose(
                cg, batched_cfg_eps_fn(model, y, gamma)(x, t), rtol=1e-5, atol=1e-5
            )


def test_implicit_classifier_bad_input():
    model, s = _cfg_model(), cosine_schedule(20)
    with pytest.raises(TypeError, match="cond_fn"):
        implicit_classifier_grad_fn("model", model.eps_fn(), s)
    with pytest.raises(TypeError, match="uncond_fn"):
        implicit_classifier_grad_fn(model.eps_fn(), None, s)
    with pytest.raises(TypeError, match="schedule"):
        implicit_classifier_grad_fn(model.eps_fn(), model.eps_fn(), 20)


# ---- chapter 10: composed conditions and negative prompts ------------------------------------------------
from diffcourse.data import attribute_grid  # noqa: E402
from diffcourse.guidance import composed_eps_fn, negative_prompt_eps_fn  # noqa: E402
from diffcourse.mixture import composed_log_prob  # noqa: E402
from diffcourse.targets import score_to_eps  # noqa: E402


def _fixed(value):
    """An eps_fn that returns ``value`` whatever x_t and t, and counts its calls."""

    def fn(x_t, t):
        fn.calls += 1
        return value

    fn.calls = 0
    return fn


def test_composed_eps_fn_is_its_formula():
    g = torch.Generator().manual_seed(0)
    eu, e1, e2, e3 = (torch.randn(6, 3, generator=g, dtype=torch.float64) for _ in range(4))
    x, t = torch.zeros(6, 3, dtype=torch.float64), torch.zeros(6, dtype=torch.long)
    for w in ([2.0, 1.5, -0.7], [0.3, 0.2, 0.1], [1.0, -1.0, 0.5]):
        out = composed_eps_fn(
            _fixed(eu), [(_fixed(e1), w[0]), (_fixed(e2), w[1]), (_fixed(e3), w[2])]
        )(x, t)
        want = eu + w[0] * (e1 - eu) + w[1] * (e2 - eu) + w[2] * (e3 - eu)
        assert torch.allclose(out, want, rtol=1e-12, atol=1e-12), w


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.5, 7.0])
def test_one_composed_term_is_eq170(gamma):
    g = torch.Generator().manual_seed(1)
    cond, uncond = torch.randn(5, 2, generator=g), torch.randn(5, 2, generator=g)
    x, t = torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)
    out = composed_eps_fn(_fixed(uncond), [(_fixed(cond), gamma)])(x, t)
    assert torch.equal(out, classifier_free_eps_fn(_fixed(cond), _fixed(uncond), gamma)(x, t))
    assert torch.equal(out, negative_prompt_eps_fn(_fixed(cond), _fixed(uncond), gamma)(x, t))


def test_negative_prompt_at_gamma_one_is_the_positive_conditional():
    """gamma = 1: the negative branch has weight 0 and is never called; the result is eps(y+)."""
    A = attribute_grid(dtype=torch.float64)
    schedule = cosine_schedule(50)
    x = torch.randn(30, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = torch.full((30,), 20, dtype=torch.long)
    pos, neg = exact_eps_fn(A.position, schedule, 0), _fixed(torch.full((30, 2), float("nan")))
    assert torch.equal(negative_prompt_eps_fn(pos, neg, 1.0)(x, t), pos(x, t))
    assert neg.calls == 0


@pytest.mark.parametrize("colour", ["rows", "diagonal"])
def test_composed_exact_eps_is_the_score_of_the_composed_law(colour):
    """At every t, composed_eps_fn of exact noise predictors is -sigma_t times the gradient of
    composed_log_prob of the *diffused* mixtures (autograd): it follows p_t(x) prod_i (p_t(x|c_i)/p_t(x))^w_i."""
    A = attribute_grid(colour=colour, dtype=torch.float64)
    schedule = cosine_schedule(50)
    x = 2 * torch.randn(40, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for step in (0, 15, 35):
        a = float(schedule.alpha_bar[step])
        t = torch.full((40,), step, dtype=torch.long)
        terms = [(A.position, 0, 1.5), (A.colour, 2, -0.6), (A.colour, 1, 0.8)]
        fn = composed_eps_fn(
            exact_eps_fn(A.joint, schedule),
            [(exact_eps_fn(m, schedule, y), w) for m, y, w in terms],
        )
        diffused = [(m.diffuse(a), y, w) for m, y, w in terms]
        xg = x.clone().requires_grad_(True)
        logq = composed_log_prob(
            xg, (A.joint.diffuse(a), None), [((m, y), w) for m, y, w in diffused]
        )
        (score,) = torch.autograd.grad(logq.sum(), xg)
        assert torch.allclose(fn(x, t), score_to_eps(score, a), rtol=1e-9, atol=1e-10), step


def test_composed_eps_fn_skips_what_has_no_weight():
    e = torch.ones(2, 2)
    x, t = torch.zeros(2, 2), torch.zeros(2, dtype=torch.long)
    u, a, b = _fixed(2 * e), _fixed(3 * e), _fixed(5 * e)
    assert torch.equal(
        composed_eps_fn(u, [(a, 0.25), (b, 0.75)])(x, t), 0.25 * 3 * e + 0.75 * 5 * e
    )
    assert u.calls == 0  # weights sum to one: eps_u drops out
    c = _fixed(7 * e)
    assert torch.equal(composed_eps_fn(u, [(c, 0.0)])(x, t), 2 * e) and c.calls == 0


def test_composed_bad_input_names_it():
    f = _fixed(torch.zeros(1, 1))
    with pytest.raises(TypeError, match="terms\\[1\\]: cond_fn"):
        composed_eps_fn(f, [(f, 1.0), ("eps", 2.0)])
    with pytest.raises(ValueError, match="terms\\[0\\] weight"):
        composed_eps_fn(f, [(f, math.inf)])
    with pytest.raises(ValueError, match="terms\\[0\\] weight"):
        composed_eps_fn(f, [(f, float("nan"))])
    with pytest.raises(TypeError, match="terms\\[0\\] weight"):
        composed_eps_fn(f, [(f, "2")])
    with pytest.raises(TypeError, match="terms\\[0\\] weight"):
        composed_eps_fn(f, [(f, True)])
    with pytest.raises(TypeError, match="terms\\[0\\]"):
        composed_eps_fn(f, [f])
    with pytest.raises(ValueError, match="terms"):
        composed_eps_fn(f, [])
    with pytest.raises(TypeError, match="terms"):
        composed_eps_fn(f, f)
    with pytest.raises(TypeError, match="uncond_fn"):
        composed_eps_fn(None, [(f, 1.0)])
    with pytest.raises(TypeError, match="negative_fn"):
        negative_prompt_eps_fn(f, 3, 2.0)
    with pytest.raises(ValueError, match="gamma"):
        negative_prompt_eps_fn(f, f, -1.0)


# ---- bad input (issue 17) -------------------------------------------------------------------------------


def test_rescaled_cfg_on_one_number_per_sample_is_finite():
    """A sample of one number has no spread: phi = 0 is eq. 170 exactly, and phi > 0 leaves it as
    eq. 170 too (its unbiased std was NaN). Wider samples are rescaled as before."""
    cond, uncond = torch.randn(5, 1), torch.randn(5, 1)
    plain = classifier_free_guidance(cond, uncond, 3.0)
    for phi in (0.0, 0.7, 1.0):
        assert torch.equal(rescaled_cfg(cond, uncond, 3.0, phi), plain), phi
    wide_c, wide_u = torch.randn(5, 4), torch.randn(5, 4)
    g = classifier_free_guidance(wide_c, wide_u, 3.0)
    expected = g * wide_c.std(1, keepdim=True) / g.std(1, keepdim=True)
    torch.testing.assert_close(rescaled_cfg(wide_c, wide_u, 3.0, 1.0), expected)


def test_guidance_built_for_one_chain_called_at_another_steps_is_named():
    """A guidance rule built with a schedule of T steps, run on a longer chain: a ValueError naming
    t and the T it was built for, not an IndexError from inside."""
    mix, short, long = random_mixture(2, (1, 1), seed=0), cosine_schedule(20), cosine_schedule(40)
    eps, grad = exact_eps_fn(mix, long), exact_classifier_grad_fn(mix, long, 0)
    x, t = torch.zeros(3, 2, dtype=mix.dtype), torch.full((3,), 30, dtype=torch.long)
    built = {
        "classifier_guided_eps_fn": classifier_guided_eps_fn(eps, grad, short, 2.0),
        "implicit_classifier_grad_fn": implicit_classifier_grad_fn(eps, eps, short),
        "the schedule": dynamic_threshold_eps_fn(eps, short),
    }
    for name, fn in built.items():
        with pytest.raises(ValueError, match=rf"^t must lie in 0\.\.19 \(.*{name}.* T=20"):
            fn(x, t)
    with pytest.raises(ValueError, match="^t must lie in 0..19"):
        ddpm_sample(built["classifier_guided_eps_fn"], (3, 2), long, progress=False)
    with pytest.raises(TypeError, match="^classifier must"):
        classifier_grad_fn("classifier", torch.zeros(3, dtype=torch.long))


# ---- chapter 8's variants side by side (issue 18: lab 8b/8c's rows from the package) -------------


def test_variant_eps_fns_are_the_single_rules_with_their_nfe():
    from diffcourse.guidance import VARIANTS, variant_eps_fns
    from diffcourse.schedules import nsr_interval

    mix = random_mixture(2, (2, 1), seed=4)
    s = cosine_schedule(100)
    c, u = exact_eps_fn(mix, s, 0), exact_eps_fn(mix, s)
    wider = GaussianMixture(mix.means, 2 * mix.covs, mix.weights, mix.labels)
    w = exact_eps_fn(wider, s, 0)
    out = variant_eps_fns(c, u, s, 10, 3.0, weak_fn=w)
    assert tuple(out) == VARIANTS
    lo, hi = nsr_interval(s)
    inside = len([t for t in ddim_levels(100, 10) if lo <= t <= hi])  # by hand
    assert 0 < inside < 10
    assert {k: v.nfe for k, v in out.items()} == {
        **{k: 20 for k in VARIANTS},
        "conditional": 10,
        "interval": 10 + inside,
    }
    x = torch.randn(30, 2, dtype=torch.float64)
    mid = torch.full((30,), (lo + hi) // 2)
    lam = lam_matching(s, 10, 3.0)
    single = {
        "conditional": c,
        "CFG": classifier_free_eps_fn(c, u, 3.0),
        "interval": interval_cfg_eps_fn(c, u, 3.0, lo, hi),
        "rescaled": lambda x, t: rescaled_cfg(c(x, t), u(x, t), 3.0, 0.7),
        "rescaled, v": rescaled_cfg_v_eps_fn(c, u, s, 3.0, 0.7),
        "autoguidance": classifier_free_eps_fn(c, w, 3.0),
        "APG": apg_eps_fn(c, u, s, 3.0, beta=-0.5),
        "CFG++": lambda x, t: cfgpp_eps_fn(c, u, lam)(x, t)[0],
        "thresholding": dynamic_threshold_eps_fn(classifier_free_eps_fn(c, u, 3.0), s),
    }
    for name, fn in single.items():
        got = out[name].eps_fn(x, mid)
        got = got[0] if isinstance(got, tuple) else got
        assert torch.allclose(got, fn(x, mid), atol=1e-12), name
    picked = variant_eps_fns(c, u, s, 10, 3.0, weak_fn=w, names=("APG", "CFG"))
    assert tuple(picked) == ("APG", "CFG")
    with pytest.raises(ValueError, match="names"):
        variant_eps_fns(c, u, s, 10, 3.0, weak_fn=w, names=("CFG", "bogus"))
    with pytest.raises(ValueError, match="steps"):
        variant_eps_fns(c, u, s, 0, 3.0, weak_fn=w)
    with pytest.raises(TypeError, match="weak_fn"):
        variant_eps_fns(c, u, s, 10, 3.0, weak_fn=None)
    # found by fuzzing: a large gamma failed inside cfgpp_eps_fn, naming lam, which the caller never
    # passed; it is the gamma they gave that CFG++ cannot match, and only if they ask for CFG++
    with pytest.raises(ValueError, match="^gamma = 100 on 10 levels matches CFG\\+\\+'s lam"):
        variant_eps_fns(c, u, s, 10, 100.0, weak_fn=w)
    assert tuple(variant_eps_fns(c, u, s, 10, 100.0, weak_fn=w, names=("CFG",))) == ("CFG",)


def test_variant_nfe_counts_the_evaluations_a_ddim_run_makes():
    """Each row's nfe against a count of the predictor calls a DDIM run makes, at the scales where
    eq. 170's form skips a branch (gamma = 0 and 1) and one where it does not. Before, every guided
    row claimed two evaluations per level at gamma = 1, where CFG, APG and thresholding make one."""
    from diffcourse.guidance import variant_eps_fns

    mix = random_mixture(2, (2, 1), seed=4)
    s = cosine_schedule(100)
    calls = []

    def counted(fn):
        return lambda x_t, t: calls.append(1) or fn(x_t, t)

    wider = GaussianMixture(mix.means, 2 * mix.covs, mix.weights, mix.labels)
    c, u = counted(exact_eps_fn(mix, s, 0)), counted(exact_eps_fn(mix, s))
    w = counted(exact_eps_fn(wider, s, 0))
    noise = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for gamma in (0.0, 1.0, 3.0):
        for name, variant in variant_eps_fns(c, u, s, 10, gamma, weak_fn=w).items():
            calls.clear()
            ddim_sample(variant.eps_fn, noise, s, 10, progress=False)
            assert variant.nfe == len(calls), (name, gamma)
    # the interval's levels are found only when the interval is asked for: on a schedule with no
    # level in [1/3, 3] the other rows are built, and the interval names what it lacks
    one = cosine_schedule(1)
    c1, u1 = exact_eps_fn(mix, one, 0), exact_eps_fn(mix, one)
    assert tuple(variant_eps_fns(c1, u1, one, 1, 3.0, weak_fn=c1, names=("CFG",))) == ("CFG",)
    with pytest.raises(ValueError, match="noise-to-signal"):
        variant_eps_fns(c1, u1, one, 1, 3.0, weak_fn=c1, names=("interval",))


def test_model_variants_use_the_networks_predictions():
    from diffcourse.guidance import model_variants

    torch.manual_seed(0)
    model = MLPDenoiser(dim=2, T=50, hidden=16, depth=2, num_classes=3).eval()
    weak = MLPDenoiser(dim=2, T=50, hidden=8, depth=1, num_classes=3).eval()
    y = torch.tensor([0, 1, 2, 1])
    x, t = torch.randn(4, 2), torch.full((4,), 20)
    out = model_variants(model, weak, y, cosine_schedule(50), 5, 2.0, names=("CFG", "autoguidance"))
    with torch.no_grad():
        c, u, w = model(x, t, y), model(x, t, model.null_labels(4)), weak(x, t, y)
        assert torch.allclose(out["CFG"].eps_fn(x, t), 2 * c - u, atol=1e-5)
        assert torch.allclose(out["autoguidance"].eps_fn(x, t), 2 * c - w, atol=1e-6)
    with pytest.raises(TypeError):
        model_variants("model", weak, y, cosine_schedule(50), 5, 2.0)


# ---- the builders against eqs. 166 and 170 written out ----------------------------------------------
from diffcourse import guidance as _guidance  # noqa: E402
from diffcourse.guidance import cfg_gap, classifier_guidance_gap  # noqa: E402


def test_cfg_gap_is_rounding_for_the_builder_and_catches_a_wrong_one(monkeypatch):
    model = _cfg_model()
    x, t = torch.randn(9, 2), torch.full((9,), 6)
    y = torch.arange(3).repeat(3)
    assert cfg_gap(model, x, t, y, 3.0) < 1e-5
    with torch.no_grad():  # a builder that scales the difference by 1.1 is off by 0.1 gamma (c - u)
        c, u = model(x, t, y), model(x, t, None)
    right = classifier_free_guidance
    monkeypatch.setattr(_guidance, "classifier_free_guidance", lambda a, b, g: right(a, b, 1.1 * g))
    expected = (0.1 * 3.0 * (c - u)).abs().max().item()
    assert abs(cfg_gap(model, x, t, y, 3.0) - expected) < 1e-5
    with pytest.raises(ValueError, match="gamma"):
        cfg_gap(model, x, t, y, -1.0)
    with pytest.raises(TypeError, match="x_t"):
        cfg_gap(model, x.tolist(), t, y, 3.0)


def test_the_gaps_run_the_networks_without_tf32(monkeypatch):
    """On a GPU, TF32 convolutions round differently at the stacked pass's batch size (lab 7's gap
    was 1e-3 on an H200): the checks of a formula run in full float32."""
    seen = []
    model, clf = _cfg_model(), MLPClassifier(dim=2, T=20, num_classes=3, hidden=16, depth=2)
    for net in (model, clf):
        net.register_forward_hook(lambda *_: seen.append(torch.backends.cudnn.allow_tf32))
    x, t, y = torch.randn(3, 2), torch.full((3,), 6), torch.arange(3)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # a GPU's default
    cfg_gap(model, x, t, y, 3.0)
    classifier_guidance_gap(clf, model, x, t, y, cosine_schedule(20), 3.0)
    assert len(seen) >= 5 and not any(seen)


def test_classifier_guidance_gap_is_rounding_and_catches_a_wrong_sign(monkeypatch):
    torch.manual_seed(0)
    s = cosine_schedule(20)
    model = _cfg_model()
    clf = MLPClassifier(dim=2, T=20, num_classes=3, hidden=16, depth=2)
    x, t = torch.randn(9, 2), torch.full((9,), 6)
    y = torch.arange(3).repeat(3)
    assert classifier_guidance_gap(clf, model, x, t, y, s, 3.0) < 1e-5
    # a flipped sign on the classifier term: off by 2 gamma sigma |grad|
    grad = classifier_grad_fn(clf, y)(x, t)
    sigma = (1 - s.alpha_bar[6]).sqrt().float()
    monkeypatch.setattr(_guidance, "classifier_guidance", lambda e, g, gm: e - gm * g)
    expected = (2 * 3.0 * sigma * grad).abs().max().item()
    assert abs(classifier_guidance_gap(clf, model, x, t, y, s, 3.0) - expected) < 1e-5
    with pytest.raises(TypeError, match="schedule"):
        classifier_guidance_gap(clf, model, x, t, y, "cosine", 3.0)


# ---- implicit_grad_for and batched_against_two (lab 5) -----------------------------------------------
from functools import partial  # noqa: E402

from diffcourse.guidance import batched_against_two, implicit_grad_for  # noqa: E402


def test_implicit_grad_for_of_exact_predictors_is_the_exact_gradient():
    mix = random_mixture(2, (2, 1), seed=5)
    s = cosine_schedule(30)
    x = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([2, 5, 9, 14, 20, 28])
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    grad = implicit_grad_for(partial(exact_eps_fn, mix, s), s)(y)(x, t)
    assert torch.allclose(grad, exact_classifier_grad_fn(mix, s, y)(x, t), atol=1e-8)
    xf, yf = x.float(), y  # a network: eq. 167 from its two branches, by hand
    sigma = (1 - s.alpha_bar[t]).sqrt()[:, None].float()
    with torch.no_grad():
        net = MLPDenoiser(dim=2, T=30, hidden=16, depth=2, num_classes=3)
        by_hand = (net(xf, t, None) - net(xf, t, yf)) / sigma
        assert torch.allclose(implicit_grad_for(net.eps_fn, s)(yf)(xf, t), by_hand, atol=1e-6)
    with pytest.raises(TypeError, match="eps_for"):
        implicit_grad_for(None, s)


def test_batched_against_two_times_both_and_measures_their_gap():
    model = _cfg_model()
    s = cosine_schedule(20)
    y = torch.arange(3).repeat(10)
    noise = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))

    def sample(eps_fn):
        gen = torch.Generator().manual_seed(1)
        return ddpm_sample(eps_fn, noise, s, generator=gen, progress=False)

    s1, s2, gap = batched_against_two(model, y, 3.0, sample)
    assert s1 > 0 and s2 > 0 and gap < 1e-3  # float rounding, through 20 steps
    x_one = sample(batched_cfg_eps_fn(model, y, 3.0))
    x_two = sample(classifier_free_eps_fn(model.eps_fn(y), model.eps_fn(), 3.0))
    assert gap == (x_one - x_two).abs().max().item()
    # a reused batched run is taken as given
    reused = batched_against_two(model, y, 3.0, sample, (9.0, x_two + 1))
    assert reused[0] == 9.0 and abs(reused[2] - 1) < 1e-5
    with pytest.raises(TypeError, match="sample"):
        batched_against_two(model, y, 3.0, None)
    with pytest.raises(ValueError, match="^batched: samples must have shape"):  # no broadcasting
        batched_against_two(model, y, 3.0, sample, (1.0, x_two[:, :1]))
    with pytest.raises(TypeError, match="^batched must be a pair"):
        batched_against_two(model, y, 3.0, sample, (1.0, x_two, 2.0))


def test_feedback_and_icg_check_their_callables_when_built():
    from diffcourse.guidance import feedback_eps_fn, independent_condition_eps_fn

    f = lambda x, t: x  # noqa: E731
    with pytest.raises(TypeError, match="^log_ratio_fn"):
        feedback_eps_fn(f, f, None, 0.5)
    with pytest.raises(TypeError, match="^model"):
        independent_condition_eps_fn("model", torch.tensor([0, 1]), 2.0, 2)


def test_networks_refuse_a_schedule_of_another_length():
    from diffcourse.guidance import classifier_guidance_gap, model_variants

    den = MLPDenoiser(dim=2, T=20, hidden=16, depth=2, num_classes=3)
    clf = MLPClassifier(dim=2, T=20, hidden=16, depth=2, num_classes=3)
    short = cosine_schedule(10)  # every step would read the wrong noise level, silently
    y = torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="^schedule has T=10 but the model was built for T=20"):
        model_variants(den, den, y, short, 5, 2.0, names=["CFG"])
    x, t = torch.zeros(4, 2), torch.full((4,), 5)
    with pytest.raises(ValueError, match="^schedule has T=10 but the classifier was built"):
        classifier_guidance_gap(clf, den, x, t, y, short, 2.0)


def test_ramped_gamma_rises_from_one_and_keeps_the_mean():
    from diffcourse.guidance import ramped_gamma

    rise, fall = ramped_gamma(3.0, 11), ramped_gamma(3.0, 11, rising=False)
    up = [rise(t) for t in range(11)]
    assert up[10] == 1.0 and up[0] == pytest.approx(5.0) and up[5] == pytest.approx(3.0)
    assert all(a > b for a, b in zip(up, up[1:]))  # larger towards t = 0, the data's end
    assert [fall(t) for t in range(11)] == pytest.approx(up[::-1])
    assert sum(g - 1 for g in up) / 11 == pytest.approx(2.0)  # a constant 3's mean excess
    assert {ramped_gamma(1.0, 5)(t) for t in range(5)} == {1.0}
    with pytest.raises(ValueError, match="gamma"):
        ramped_gamma(0.5, 11)
    with pytest.raises(ValueError, match="T"):
        ramped_gamma(3.0, 1)
    with pytest.raises(TypeError, match="rising"):
        ramped_gamma(3.0, 11, rising="no")
    with pytest.raises(ValueError, match="step"):
        rise(11)


@pytest.mark.parametrize(
    "rows, message",
    [(0, "^x_t must hold at least one sample"), (3, "^x_t holds NaN or infinite values")],
)
def test_the_gap_checks_refuse_an_empty_or_nan_x_t(rows, message):
    """cfg_gap and classifier_guidance_gap failed inside torch's max() for an empty x_t, and
    returned NaN for an x_t with a NaN entry, silently."""
    from diffcourse.guidance import cfg_gap, classifier_guidance_gap

    den = MLPDenoiser(dim=2, T=20, hidden=8, depth=1, num_classes=3)
    clf = MLPClassifier(dim=2, num_classes=3, T=20, hidden=8, depth=1)
    x, t, y = torch.zeros(rows, 2), torch.full((rows,), 5), torch.arange(rows)
    if rows:
        x[1, 0] = float("nan")
    with pytest.raises(ValueError, match=message):
        cfg_gap(den, x, t, y, 2.0)
    with pytest.raises(ValueError, match=message):
        classifier_guidance_gap(clf, den, x, t, y, cosine_schedule(20), 2.0)


def test_batched_against_two_refuses_no_samples_and_nan_samples():
    """A batched run with a NaN sample gave a NaN gap, silently; no samples failed in torch's max()."""
    den = MLPDenoiser(dim=2, T=20, hidden=8, depth=1, num_classes=3)
    y, x = torch.arange(3), torch.zeros(3, 2)
    nan = x.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="^batched: samples holds NaN"):
        batched_against_two(den, y, 2.0, lambda fn: x, (0.1, nan))
    with pytest.raises(ValueError, match="^sample's samples must hold at least one sample"):
        batched_against_two(den, y[:0], 2.0, lambda fn: x[:0])


def test_dynamic_thresholding_of_no_sample_is_no_sample():
    """An empty batch failed inside torch's quantile(); the other rules return an empty batch."""
    s = cosine_schedule(20)
    rule = dynamic_threshold_eps_fn(lambda x, t: 3 * x, s)
    out = rule(torch.empty(0, 2), torch.empty(0, dtype=torch.long))
    assert out.shape == (0, 2)


def test_variant_eps_fns_refuse_an_empty_list_of_names():
    """names=[] returned an empty table, silently."""
    from diffcourse.guidance import variant_eps_fns

    fn = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="^names must be a non-empty sequence"):
        variant_eps_fns(fn, fn, cosine_schedule(20), 5, 2.0, weak_fn=fn, names=[])
