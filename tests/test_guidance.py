import pytest
import torch

from diffcourse.guidance import classifier_free_guidance, classifier_guidance

from conftest import random_mixture


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
        assert torch.allclose(classifier_free_guidance(cond, uncond, gamma),
                              classifier_guidance(uncond, mix.classifier_grad(x, 1), gamma), rtol=1e-10, atol=1e-12)


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
    with torch.no_grad():                      # works inside a sampler's no_grad too
        assert torch.equal(classifier_grad_fn(clf, y)(x, t), g)


def test_exact_guided_eps_at_gamma_one_is_the_conditional_eps():
    mix = random_mixture(2, (2, 1), seed=5)
    s = cosine_schedule(30)
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([0, 3, 10, 10, 20, 29])
    guided = classifier_guided_eps_fn(exact_eps_fn(mix, s), exact_classifier_grad_fn(mix, s, 1), s, 1.0)
    cond = exact_eps_fn(mix, s, y=1)(x, t)
    assert ((guided(x, t) - cond).abs().max() / cond.abs().max()).item() < 1e-8


def test_guided_sampler_with_gamma_zero_is_the_unconditional_sampler():
    torch.manual_seed(0)
    s = cosine_schedule(20)
    model = MLPDenoiser(dim=2, T=20, hidden=16, depth=2)
    clf = MLPClassifier(dim=2, T=20, num_classes=2, hidden=16, depth=2)
    y = torch.zeros(50, dtype=torch.long)
    plain = ddpm_sample(model.eps_fn(), (50, 2), s, generator=torch.Generator().manual_seed(3), progress=False)
    guided = ddpm_sample(classifier_guided_eps_fn(model.eps_fn(), classifier_grad_fn(clf, y), s, 0.0), (50, 2), s,
                         generator=torch.Generator().manual_seed(3), progress=False)
    assert torch.equal(plain, guided)
    pushed = ddpm_sample(classifier_guided_eps_fn(model.eps_fn(), classifier_grad_fn(clf, y), s, 3.0), (50, 2), s,
                         generator=torch.Generator().manual_seed(3), progress=False)
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
        near_one = batched_cfg_eps_fn(model, y, 1.0 + 1e-7)(x, t)      # the stacked pass itself
    assert torch.equal(guided, cond)
    assert torch.allclose(near_one, cond, atol=1e-5)
    with torch.no_grad():                      # gamma = 0 is the null-label (unconditional) prediction
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
    cg = classifier_guided_eps_fn(exact_eps_fn(mix, s), exact_classifier_grad_fn(mix, s, 0), s, 4.0)(x, t)
    assert torch.allclose(cfg, cg, rtol=1e-8, atol=1e-10)


def test_cfg_wrappers_bad_input():
    model = _cfg_model()
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="model"):
        batched_cfg_eps_fn(MLPDenoiser(dim=2, T=20, hidden=8, depth=1), y, 2.0)
    with pytest.raises(ValueError, match="y"):
        batched_cfg_eps_fn(model, torch.full((4,), 3), 2.0)      # the null label is not a class to ask for
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
    assert torch.equal(rescaled_cfg(cond, uncond, 4.0, phi=0.0), classifier_free_guidance(cond, uncond, 4.0))
    assert torch.allclose(rescaled_cfg(cond, uncond, 1.0, phi=0.7), cond)
    full = rescaled_cfg(cond, uncond, 4.0, phi=1.0)
    assert torch.allclose(full.std(dim=1), cond.std(dim=1), atol=1e-6)       # each sample's scale is cond's
    with pytest.raises(ValueError, match="phi"):
        rescaled_cfg(cond, uncond, 2.0, phi=1.5)


def test_interval_guidance_acts_only_inside_its_interval():
    cond_fn = lambda x, t: x + 1.0                                           # noqa: E731
    uncond_fn = lambda x, t: x - 1.0                                         # noqa: E731
    x, t = torch.zeros(4, 2), torch.tensor([0, 5, 10, 19])
    out = interval_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 5, 10)(x, t)
    cfg = classifier_free_eps_fn(cond_fn, uncond_fn, 3.0)(x, t)
    assert torch.equal(out[1:3], cfg[1:3]) and torch.equal(out[[0, 3]], cond_fn(x, t)[[0, 3]])
    calls = []
    counting = lambda x, t: calls.append(1) or x                              # noqa: E731
    interval_cfg_eps_fn(cond_fn, counting, 3.0, 5, 10)(x, torch.full((4,), 15))
    assert not calls                                                          # outside: one pass only
    with pytest.raises(ValueError, match="t_low"):
        interval_cfg_eps_fn(cond_fn, uncond_fn, 3.0, 10, 5)


def test_autoguidance_is_eq170_with_a_weak_model():
    good = lambda x, t: 2 * x                                                 # noqa: E731
    weak = lambda x, t: x                                                     # noqa: E731
    x, t = torch.randn(5, 2), torch.zeros(5, dtype=torch.long)
    assert torch.allclose(autoguidance_eps_fn(good, weak, 2.5)(x, t), 2.5 * 2 * x + (1 - 2.5) * x)
