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
