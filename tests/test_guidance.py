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
from diffcourse.guidance import classifier_grad_fn, classifier_guided_eps_fn  # noqa: E402
from diffcourse.mixture import exact_classifier_grad_fn, exact_eps_fn  # noqa: E402
from diffcourse.models import MLPClassifier, MLPDenoiser  # noqa: E402
from diffcourse.samplers import ddpm_sample  # noqa: E402
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
    with pytest.raises(ValueError, match="y"):
        batched_cfg_eps_fn(
            model, torch.full((4,), 3), 2.0
        )  # the null label is not a class to ask for
    with pytest.raises(TypeError, match="y"):
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
import math  # noqa: E402

from diffcourse.guidance import apg_eps_fn, cfgpp_eps_fn, dynamic_threshold_eps_fn  # noqa: E402
from diffcourse.samplers import ddim_sample  # noqa: E402
from diffcourse.schedules import _gather  # noqa: E402
from diffcourse.targets import eps_to_x0, x0_to_eps  # noqa: E402


def _eps_with_x0(x0: torch.Tensor, s):
    """An eps_fn whose clean estimate x0_hat is ``x0`` at every x_t and t."""
    return lambda x_t, t: x0_to_eps(x_t, x0, _gather(s.alpha_bar, t, x_t))


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
    apg.reset()
    assert torch.allclose(_x0_of(apg(x, t), x, t, s), first)
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
    """Sample 1: |x0_hat| <= 1 but for one entry past the 99.5% quantile, so it is left alone, bit for
    bit. Sample 2: x0_hat spread wide; its x0_hat comes back within [-1, 1], reaching 1."""
    s = cosine_schedule(20)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(shape, generator=g, dtype=torch.float64) * 2 - 1
    x0[0].view(-1)[7] = 5.0
    x0[1] = 3 * torch.randn(shape[1:], generator=g, dtype=torch.float64)
    x, t = torch.randn(shape, generator=g, dtype=torch.float64), torch.tensor([2, 15])
    eps_fn = _eps_with_x0(x0, s)
    out = dynamic_threshold_eps_fn(eps_fn, s)(x, t)
    assert torch.equal(out[0], eps_fn(x, t)[0])
    inside = _eps_with_x0(x0.clamp(-0.99, 0.99), s)  # every |x0_hat| < 1
    assert torch.equal(dynamic_threshold_eps_fn(inside, s)(x, t), inside(x, t))
    back = _x0_of(out, x, t, s)[1]
    assert back.abs().max() <= 1 + 1e-9 and back.abs().max() >= 1 - 1e-9
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


# ---- guidance with a per-level scale; CFG++ matched to CFG; rescaled CFG as an eps_fn -------------------

from diffcourse.guidance import (  # noqa: E402
    cfgpp_gamma_eff,
    lam_matching,
    per_level_cfg_eps_fn,
    rescaled_cfg_eps_fn,
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
