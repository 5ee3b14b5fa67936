import pytest
import torch

from diffcourse.data import three_blobs
from diffcourse.metrics import (
    distance_to_exact,
    mixture_draw,
    relative_score_error,
    sample_distance,
    sliced_w2,
)
from diffcourse.mixture import exact_eps_fn
from diffcourse.schedules import cosine_schedule


def test_sliced_w2_of_a_shift():
    """Shifting a set by v moves every projection by <u, v>: SW2^2 = E_u <u,v>^2 = |v|^2 / D."""
    x = torch.randn(3000, 2, generator=torch.Generator().manual_seed(0))
    v = torch.tensor([0.6, -0.8])
    d = sliced_w2(x, x + v, projections=4000, generator=torch.Generator().manual_seed(1))
    assert abs(d - (1.0 / 2) ** 0.5) < 0.02
    assert sliced_w2(x, x.clone()) == 0.0


def test_floor_ratio_near_one_for_exact_draws_and_large_for_wrong_ones():
    mix = three_blobs()
    draw = mixture_draw(mix)
    exact = draw(20000, torch.Generator().manual_seed(123))
    r = distance_to_exact(exact, draw)
    assert 0.6 < r["ratio"] < 1.8
    wrong = exact * 1.3
    assert distance_to_exact(wrong, draw)["ratio"] > 3


def test_relative_score_error_is_zero_for_the_exact_predictor_and_one_for_zero():
    mix = three_blobs(dtype=torch.float64)
    s = cosine_schedule(50)
    exact = exact_eps_fn(mix, s)
    err = relative_score_error(
        lambda x, t: exact(x.double(), t).float(), mix, s, [0, 10, 49], n=500
    )
    assert (err < 1e-5).all()
    zero = relative_score_error(lambda x, t: torch.zeros_like(x), mix, s, [0, 25], n=500)
    assert torch.allclose(zero, torch.ones(2), atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="x and y"):
        sliced_w2(torch.zeros(10, 2), torch.zeros(9, 2))
    with pytest.raises(ValueError, match="ref"):
        sample_distance(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="repeats"):
        sample_distance(torch.zeros(10, 2), torch.zeros(10, 2), repeats=0)


def test_class_agreement_ceiling_and_floor():
    from diffcourse.metrics import class_agreement
    from diffcourse.mixture import GaussianMixture

    g = torch.Generator().manual_seed(0)
    far = three_blobs(radius=8.0, std=0.5)
    for c in range(3):
        x, _ = far.sample(2000, c, generator=g)
        assert class_agreement(x, c, far) == 1.0
    # three classes with the same law: the Bayes classifier can do no better than chance
    same = GaussianMixture(
        torch.zeros(3, 2), torch.eye(2).expand(3, 2, 2), torch.ones(3), torch.arange(3)
    )
    x, y = same.sample(30000, generator=g)
    assert abs(class_agreement(x, y, same) - 1 / 3) < 0.02
    with pytest.raises(ValueError, match="y"):
        class_agreement(x[:5], 3, same)


def test_spread():
    from diffcourse.metrics import spread

    x = torch.randn(5000, 2, generator=torch.Generator().manual_seed(0))
    assert abs(spread(2 * x, x) - 4.0) < 1e-9
    with pytest.raises(ValueError, match="reference"):
        spread(x, torch.zeros(10, 3))


# ---- images ------------------------------------------------------------------------------------------

from diffcourse.metrics import diversity, fidelity, frechet_distance, image_metrics  # noqa: E402
from diffcourse.models import ConvClassifier  # noqa: E402


def test_frechet_distance():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g, dtype=torch.float64)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # closed form for diagonal Gaussians: |mu|^2 + sum (s_a - s_b)^2 with s the standard deviations
    b = torch.randn(4000, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [1.0, 2.0, 0.5]
    ) + torch.tensor([1.0, 0.0, -1.0])
    exact = 2.0 + (1 - 1) ** 2 + (1 - 2) ** 2 + (1 - 0.5) ** 2
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.05)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    # a rotation of both sets changes nothing
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    assert frechet_distance(a @ q, b @ q) == pytest.approx(frechet_distance(a, b), rel=1e-6)
    with pytest.raises(ValueError, match="same number of features"):
        frechet_distance(a, b[:, :2])
    with pytest.raises(ValueError, match="b"):
        frechet_distance(a, b[:1])
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(a, torch.full_like(b, float("nan")))


def test_fidelity_of_real_images_is_accuracy():
    torch.manual_seed(0)
    clf = ConvClassifier(T=None, width=8, features=16)
    x, y = torch.randn(50, 1, 8, 8), torch.randint(0, 10, (50,))
    accuracy = (clf(x).argmax(1) == y).double().mean().item()
    assert fidelity(clf, x, y, batch_size=7) == pytest.approx(accuracy)
    assert fidelity(clf, x, clf(x).argmax(1)) == 1.0
    with pytest.raises(ValueError, match="y"):
        fidelity(clf, x, y[:3])


def test_diversity():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(200, 1, 4, 4, generator=g), torch.arange(200) % 4
    assert diversity(x, y, x, y) == pytest.approx(1.0)
    assert diversity(0.5 * x, y, x, y) == pytest.approx(0.5)  # distances scale
    # identical samples within each class: no diversity at all
    same = x[:4].repeat(50, 1, 1, 1)
    assert diversity(same, y, x, y) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="labels"):
        diversity(x, y[:5], x, y)


def test_image_metrics_keys():
    torch.manual_seed(0)
    clf = ConvClassifier(T=None, width=8, features=16)
    x, y = torch.randn(40, 1, 8, 8), torch.arange(40) % 10
    m = image_metrics(clf, x, y, x, y)
    assert set(m) == {"fidelity", "frechet", "diversity"}
    assert m["frechet"] == pytest.approx(0.0, abs=1e-6) and m["diversity"] == pytest.approx(1.0)


# ---- the per-class loop of the 2-D labs, the Fréchet floor ---------------------------------------------

from diffcourse.metrics import (  # noqa: E402
    FrechetFloor,
    agreement_and_spread,
    class_agreement,
    class_references,
    frechet_floor,
    per_class_agreement_and_spread,
    spread,
)
from diffcourse.samplers import balanced_labels  # noqa: E402


def test_agreement_and_spread_averages_the_classes_equally():
    mix = three_blobs()
    refs = class_references(mix, 500, seed=10)
    assert sorted(refs) == [0, 1, 2] and all(r.shape == (500, 2) for r in refs.values())
    # exact draws: class c's samples come first, then the others; class 0 gets more samples
    gen = torch.Generator().manual_seed(0)
    parts = [mix.sample(n, c, generator=gen)[0] for c, n in ((0, 900), (1, 300), (2, 300))]
    x, y = torch.cat(parts), torch.tensor([0] * 900 + [1] * 300 + [2] * 300)
    rows = per_class_agreement_and_spread(x, y, mix, refs)
    for c, (agree, div) in rows.items():
        assert agree == class_agreement(x[y == c], c, mix) and div == spread(x[y == c], refs[c])
    agree, div = agreement_and_spread(x, y, mix, refs)
    assert (
        agree == sum(a for a, _ in rows.values()) / 3
        and div == sum(d for _, d in rows.values()) / 3
    )
    assert 0.85 < agree < 1 and 0.8 < div < 1.25  # exact draws: near the ceiling, spread near 1
    assert agreement_and_spread(x, y, mix) == (agree, None)
    # unconditional draws asked for balanced labels: agreement near 1/3 (the floor), spread far above 1
    y_bal = balanced_labels(3, 500)
    uncond = mix.sample(1500, generator=gen)[0]
    agree_u, div_u = agreement_and_spread(uncond, y_bal, mix, refs)
    assert abs(agree_u - 1 / 3) < 0.06 and div_u > 2
    with pytest.raises(ValueError, match="references"):
        agreement_and_spread(x, y, mix, {0: refs[0]})
    with pytest.raises(ValueError, match="y"):
        agreement_and_spread(x, y[:10], mix, refs)


def test_frechet_floor_of_features():
    class Judge(torch.nn.Module):
        def features(self, x):
            return x.flatten(1)

    gen = torch.Generator().manual_seed(0)
    pool, ref = torch.randn(400, 3, generator=gen), torch.randn(300, 3, generator=gen)
    floor = frechet_floor(Judge(), pool, ref, n=100, draws=5, seed=100)
    assert isinstance(floor, FrechetFloor) and floor.values.shape == (5,)
    rows = torch.randperm(400, generator=torch.Generator().manual_seed(102))[:100]
    from diffcourse.metrics import frechet_distance

    assert floor.values[2].item() == pytest.approx(frechet_distance(pool[rows], ref), rel=1e-6)
    assert floor.mean == pytest.approx(floor.values.mean().item()) and floor.std > 0
    far = frechet_floor(Judge(), pool + 1.0, ref, n=100, draws=5)
    assert far.mean > floor.mean + 2.5  # a shift of 1 per feature adds 3
    with pytest.raises(ValueError, match="n"):
        frechet_floor(Judge(), pool, ref, n=401)
