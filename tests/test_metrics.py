import statistics

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
    # 1.1 x the exact eps: RMS(0.1 s) / RMS(s) = 0.1 (a ratio of mean squares would be 0.01)
    off = relative_score_error(lambda x, t: 1.1 * exact(x.double(), t), mix, s, [0, 25], n=500)
    assert torch.allclose(off, torch.full((2,), 0.1, dtype=off.dtype), atol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="x and y"):
        sliced_w2(torch.zeros(10, 2), torch.zeros(9, 2))
    nan = torch.zeros(10, 2)
    nan[3] = float("nan")  # a sampler that blew up: refused, not scored
    with pytest.raises(ValueError, match="^x holds NaN"):
        sliced_w2(nan, torch.zeros(10, 2))
    with pytest.raises(ValueError, match="^x holds NaN"):
        spread(nan, torch.randn(10, 2))
    with pytest.raises(ValueError, match="^x holds NaN"):  # argmax of NaN is class 0: 1.0 before
        class_agreement(nan, 0, three_blobs())
    with pytest.raises(ValueError, match="ref"):
        sample_distance(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="repeats"):
        sample_distance(torch.zeros(10, 2), torch.zeros(10, 2), repeats=0)


def test_sample_distance_averages_exactly_repeats_chunks():
    """11 points in 5 chunks: torch.chunk made 4 (3, 3, 3, 2) and the sum was still divided by 5;
    tensor_split makes 5 (3, 2, 2, 2, 2), and their mean is the distance."""
    from diffcourse.metrics import _sliced_w2

    gen = torch.Generator().manual_seed(0)
    x, ref = torch.randn(11, 2, generator=gen), torch.randn(11, 2, generator=gen) + 1
    g = torch.Generator().manual_seed(3)
    chunks = zip(x.tensor_split(5), ref.tensor_split(5))
    by_hand = sum(_sliced_w2(a, b, 16, g) for a, b in chunks) / 5
    assert sample_distance(x, ref, repeats=5, projections=16, seed=3) == pytest.approx(by_hand)


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
    with pytest.raises(ValueError, match="^y must lie in"):
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

    # covariances that do not commute, exactly those of the two sets: tr (S_a S_b)^(1/2) in closed
    # form for 2 x 2, sqrt(tr M + 2 sqrt(det M)) with M = S_a S_b; tr(S_a^(1/2) S_b^(1/2)) differs
    def with_cov(x, cov):
        x = x - x.mean(0)
        return (
            x
            @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(x.T))).T
            @ torch.linalg.cholesky(cov).T
        )

    s_a = torch.tensor([[2.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    s_b = torch.tensor([[1.0, -0.6], [-0.6, 2.0]], dtype=torch.float64)
    x_a, x_b = with_cov(a[:, :2], s_a), with_cov(b[:, :2], s_b)
    m = s_a @ s_b
    cross = (m.trace() + 2 * m.det().sqrt()).sqrt()
    assert frechet_distance(x_a, x_b) == pytest.approx(
        (s_a.trace() + s_b.trace() - 2 * cross).item(), rel=1e-9
    )
    with pytest.raises(ValueError, match="same number of features"):
        frechet_distance(a, b[:, :2])
    with pytest.raises(ValueError, match="^b must be a"):
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
    with pytest.raises(ValueError, match="^y must have shape"):
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
    # samples half as spread as their reference: diversity 0.5 (swapped arguments would give 2)
    assert image_metrics(clf, 0.5 * x, y, x, y)["diversity"] == pytest.approx(0.5, rel=1e-9)


# ---- chapter 12: entropy ------------------------------------------------------------------------------

import math  # noqa: E402

from diffcourse.metrics import knn_entropy  # noqa: E402


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_knn_entropy_of_a_gaussian(dim):
    """H(N(0, S)) = 0.5 log((2 pi e)^D det S)."""
    gen = torch.Generator().manual_seed(dim)
    a = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    cov = a @ a.T + 0.3 * torch.eye(dim, dtype=torch.float64)
    x = torch.randn(6000, dim, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    exact = 0.5 * (dim * math.log(2 * math.pi * math.e) + torch.logdet(cov).item())
    assert abs(knn_entropy(x) - exact) < 0.05 * dim
    # a scale by c adds D log c, exactly: the estimator is built from distances
    assert abs(knn_entropy(2 * x) - knn_entropy(x) - dim * math.log(2)) < 1e-9


def test_knn_entropy_bad_input():
    with pytest.raises(ValueError, match="^x must have"):
        knn_entropy(torch.zeros(10))
    with pytest.raises(TypeError, match="^x must be a torch.Tensor"):
        knn_entropy([[0.0, 1.0], [1.0, 0.0]])
    with pytest.raises(ValueError, match="^k must be an int"):
        knn_entropy(torch.randn(10, 2), k=10)
    with pytest.raises(ValueError, match="repeated"):
        knn_entropy(torch.zeros(10, 2), k=1)


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
    with pytest.raises(ValueError, match="^y must have shape"):
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
    with pytest.raises(ValueError, match="^n must be an int"):
        frechet_floor(Judge(), pool, ref, n=401)


# ---- the gradient of a classifier against the exact one (chapters 4 and 5) -------------------------------

from functools import partial  # noqa: E402

from diffcourse.guidance import classifier_grad_fn, implicit_classifier_grad_fn  # noqa: E402
from diffcourse.metrics import relative_grad_error  # noqa: E402
from diffcourse.mixture import exact_classifier_grad_fn  # noqa: E402
from diffcourse.models import MLPClassifier  # noqa: E402


def test_relative_grad_error_zero_for_exact_gradients_and_one_for_none():
    mix = three_blobs(dtype=torch.float64)
    s = cosine_schedule(50)
    exact = relative_grad_error(
        lambda y: exact_classifier_grad_fn(mix, s, y), mix, s, [0, 20, 45], n=400
    )
    assert (exact < 1e-5).all()
    implicit = relative_grad_error(
        lambda y: implicit_classifier_grad_fn(exact_eps_fn(mix, s, y), exact_eps_fn(mix, s), s),
        mix,
        s,
        [0, 20, 45],
        n=400,
    )
    assert (implicit < 1e-4).all()
    none = relative_grad_error(lambda y: lambda x, t: torch.zeros_like(x), mix, s, [5, 30], n=400)
    assert torch.allclose(none, torch.ones(2, dtype=none.dtype), atol=1e-6)
    scaled = relative_grad_error(
        lambda y: lambda x, t: 1.1 * exact_classifier_grad_fn(mix, s, y)(x, t), mix, s, [10], n=400
    )
    assert abs(scaled.item() - 0.1) < 1e-5  # a 10% error in scale reads as 0.1


def test_relative_grad_error_same_points_for_the_same_seed():
    mix, s = three_blobs(), cosine_schedule(50)
    torch.manual_seed(0)
    clf = MLPClassifier(dim=2, T=50, num_classes=3, hidden=16, depth=1)
    a = relative_grad_error(partial(classifier_grad_fn, clf), mix, s, [3, 30], n=300, seed=4)
    b = relative_grad_error(partial(classifier_grad_fn, clf), mix, s, [3, 30], n=300, seed=4)
    assert torch.equal(a, b) and (a > 0).all()


def test_relative_grad_error_bad_input():
    mix, s = three_blobs(), cosine_schedule(50)
    with pytest.raises(TypeError, match="grad_for"):
        relative_grad_error("classifier", mix, s, [0])
    with pytest.raises(ValueError, match="steps"):
        relative_grad_error(lambda y: None, mix, s, [50])
    with pytest.raises(ValueError, match="^n must be an int"):
        relative_grad_error(lambda y: None, mix, s, [0], n=0)


# ---- several samplers against one target law (chapter 6) ------------------------------------------------

from diffcourse.metrics import distances_to_exact, tilted_draw  # noqa: E402
from diffcourse.mixture import sample_tilted  # noqa: E402


def test_distances_to_exact_equal_distance_to_exact_one_by_one():
    mix = three_blobs()
    draw = tilted_draw(mix, 0, 3.0)
    sets = {
        "tilted": sample_tilted(mix, 0, 3.0, 600, generator=torch.Generator().manual_seed(1)),
        "p(x|y)": mix.sample(600, 0, generator=torch.Generator().manual_seed(2))[0],
    }
    together = distances_to_exact(sets, draw, seed=3)
    for name, x in sets.items():
        assert together[name] == distance_to_exact(x, draw, seed=3)
    assert together["p(x|y)"]["ratio"] > together["tilted"]["ratio"]


def test_distances_to_exact_bad_input():
    draw = mixture_draw(three_blobs(), 0)
    with pytest.raises(ValueError, match="samples must hold at least one"):
        distances_to_exact({}, draw)
    with pytest.raises(ValueError, match="samples"):
        distances_to_exact({"a": torch.zeros(10, 2), "b": torch.zeros(12, 2)}, draw)
    with pytest.raises(TypeError, match="draw"):
        distances_to_exact({"a": torch.zeros(10, 2)}, "draw")


from diffcourse.guidance import classifier_free_eps_fn  # noqa: E402
from diffcourse.metrics import relative_eps_error  # noqa: E402
from diffcourse.mixture import exact_cfg_eps_fn  # noqa: E402


def test_relative_eps_error_against_the_exact_predictors():
    mix, s = three_blobs(), cosine_schedule(40)
    exact_for = lambda y: exact_eps_fn(mix, s, y)  # noqa: E731
    same = relative_eps_error(exact_for, exact_for, mix, s, [0, 20, 39], n=300)
    assert (same == 0).all()
    scaled = relative_eps_error(
        lambda y: lambda x, t: 1.1 * exact_for(y)(x, t), exact_for, mix, s, [5, 30], n=300
    )
    assert torch.allclose(scaled, torch.full((2,), 0.1), atol=1e-5)
    # eq. 170 at gamma = 3 against the unconditional predictor: an error that grows with gamma
    guided = relative_eps_error(
        lambda y: exact_cfg_eps_fn(mix, s, y, 3.0),
        lambda y: classifier_free_eps_fn(exact_for(y), exact_eps_fn(mix, s), 2.0),
        mix,
        s,
        [10],
        n=300,
    )
    assert guided.item() > 0.01
    with pytest.raises(TypeError, match="reference_for"):
        relative_eps_error(exact_for, None, mix, s, [0])
    with pytest.raises(ValueError, match="steps"):
        relative_eps_error(exact_for, exact_for, mix, s, [40])


def test_frechet_floor_balanced_draws_keep_the_class_shares():
    class Judge(torch.nn.Module):
        def features(self, x):
            return x.flatten(1)

    # two classes far apart in feature space: the random floor's class shares fluctuate, the balanced one's do not
    gen = torch.Generator().manual_seed(0)
    y_pool = torch.tensor([0] * 300 + [1] * 100)
    pool = torch.randn(400, 2, generator=gen) + 10 * y_pool[:, None].float()
    y_ref = torch.tensor([0] * 100 + [1] * 100)
    ref = torch.randn(200, 2, generator=gen) + 10 * y_ref[:, None].float()
    balanced = frechet_floor(Judge(), pool, ref, n=100, draws=8, y_pool=y_pool)
    random = frechet_floor(Judge(), pool, ref, n=100, draws=8)
    assert random.mean > 10 * balanced.mean and balanced.mean < 0.5  # 3:1 shares against 1:1
    from diffcourse.data import balanced_rows
    from diffcourse.metrics import frechet_distance

    rows = balanced_rows(y_pool, 50, 103)
    assert balanced.values[3].item() == pytest.approx(frechet_distance(pool[rows], ref), rel=1e-9)
    one = frechet_floor(Judge(), pool[:50], ref, n=50, draws=1)
    assert one.values.shape == (1,) and one.std == 0.0 and one.mean == one.values[0].item()
    with pytest.raises(ValueError, match="^n must be a multiple of the number of classes"):
        frechet_floor(Judge(), pool, ref, n=101, y_pool=y_pool)  # not a multiple of the 2 classes
    with pytest.raises(ValueError, match="y_pool"):
        frechet_floor(Judge(), pool, ref, n=100, y_pool=y_pool[:10])
    with pytest.raises(TypeError, match="y_pool"):
        frechet_floor(Judge(), pool, ref, n=100, y_pool=y_pool.float())
    with pytest.raises(ValueError, match="draws"):
        frechet_floor(Judge(), pool, ref, n=100, draws=0)


def test_image_metrics_over_seeds_pairs_the_noise_across_methods():
    from diffcourse.metrics import image_metrics_over_seeds
    from diffcourse.samplers import seeded_noise

    class Judge(torch.nn.Module):  # the class is the sign of the first pixel
        def forward(self, x):
            return torch.stack([-x[:, 0, 0, 0], x[:, 0, 0, 0]], 1)

        def features(self, x):
            return x.flatten(1)[:, :3]

    y = torch.tensor([0, 1] * 20)
    ref = seeded_noise((40, 1, 2, 2), 99).clamp(-1, 1)
    seen = []

    def sample(noise, gen):
        seen.append((noise.clone(), torch.randn(1, generator=gen)))
        return 3 * noise  # out of range: clamped before judging

    out = image_metrics_over_seeds(Judge(), sample, y, ref, y, seeds=3, shape=(1, 2, 2))
    assert len(out.runs) == 3 and torch.equal(seen[1][0], seeded_noise((40, 1, 2, 2), 1))
    assert not torch.equal(seen[0][1], seen[1][1])  # each seed its own generator
    image_metrics_over_seeds(Judge(), sample, y, ref, y, seeds=1, shape=(1, 2, 2))
    assert torch.equal(seen[3][0], seen[0][0]) and torch.equal(
        seen[3][1], seen[0][1]
    )  # same seed, same inputs
    from diffcourse.metrics import image_metrics, out_of_range

    first = image_metrics(Judge(), (3 * seeded_noise((40, 1, 2, 2), 0)).clamp(-1, 1), y, ref, y)
    assert out.runs[0] == first
    # how far the images left [-1, 1], read before the clamp: one figure per seed
    outside = [out_of_range(3 * seeded_noise((40, 1, 2, 2), k)) for k in range(3)]
    assert out.out_of_range == pytest.approx(tuple(outside)) and min(outside) > 0.5
    assert out.mean("frechet") == pytest.approx(out.values("frechet").mean().item())
    # the sample standard deviation, from the standard library
    stdev = statistics.stdev(run["frechet"] for run in out.runs)
    assert stdev > 0 and out.std("frechet") == pytest.approx(stdev)
    assert set(out.means()) == {"fidelity", "frechet", "diversity"}
    with pytest.raises(ValueError, match="seeds"):
        image_metrics_over_seeds(Judge(), sample, y, ref, y, seeds=0)
    with pytest.raises(ValueError, match="sample's images"):
        image_metrics_over_seeds(Judge(), lambda n, g: n[:5], y, ref, y, shape=(1, 2, 2))


def test_distance_to_exact_fn_gives_distance_to_exact_numbers():
    """Chapter 11's many sets against one law: the draws and the floor made once, the same numbers."""
    from diffcourse.metrics import distance_to_exact_fn

    mixture = three_blobs()
    against = distance_to_exact_fn(mixture_draw(mixture, 1), 1000, seed=3)
    for shift in (0.0, 0.3):
        x = mixture.sample(1000, 1, generator=torch.Generator().manual_seed(5))[0] + shift
        assert against(x) == distance_to_exact(x, mixture_draw(mixture, 1), seed=3)
    with pytest.raises(ValueError, match="samples"):
        against(x[:10])
    # found by fuzzing: a draw that returns the same points every time made the floor 0 (a
    # ZeroDivisionError in distance_to_exact, a ratio of inf from distance_to_exact_fn)
    from diffcourse.metrics import distances_to_exact

    constant = lambda n, gen: torch.zeros(n, 2)  # noqa: E731
    for call in (
        lambda: distance_to_exact(x, constant),
        lambda: distance_to_exact_fn(constant, 50),
        lambda: distances_to_exact({"a": x}, constant),
    ):
        with pytest.raises(ValueError, match="^draw must return random draws"):
            call()


def test_tilted_draw_is_sample_tilted():
    from diffcourse.metrics import tilted_draw
    from diffcourse.mixture import sample_tilted

    mixture = three_blobs()
    a = tilted_draw(mixture, 0, 3.0)(500, torch.Generator().manual_seed(2))
    assert torch.equal(
        a, sample_tilted(mixture, 0, 3.0, 500, generator=torch.Generator().manual_seed(2))
    )


# ---- chapter 1: Tweedie by brute force, one chunk's floor; chapter 2: agreement, label gain -------
from diffcourse.metrics import (  # noqa: E402
    chunk_floors,
    label_gain,
    per_class_agreement,
    tweedie_errors,
)
from diffcourse.mixture import GaussianMixture  # noqa: E402
from diffcourse.schedules import q_sample  # noqa: E402


def test_tweedie_errors_are_chapter_1_labs_loop():
    """The lab's former loop, written out on a small input, gives the same numbers."""
    mix, s = three_blobs(), cosine_schedule(50)
    got = tweedie_errors(
        mix, s, (10, 30), pool_size=3000, n=16, generator=torch.Generator().manual_seed(0)
    )
    gen = torch.Generator().manual_seed(0)
    pool, _ = mix.sample(3000, generator=gen)
    for step in (10, 30):
        a = float(s.alpha_bar[step])
        x0, _ = mix.sample(16, generator=gen)
        x_t = q_sample(x0, torch.full((16,), step), s, generator=gen)
        eps_j = (x_t[:, None] - a**0.5 * pool[None]) / (1 - a) ** 0.5
        w = torch.softmax(-eps_j.pow(2).sum(-1) / 2, dim=1)
        x0_mean, eps_mean = w @ pool, (w[..., None] * eps_j).sum(1)
        score = mix.diffuse(a).score(x_t)
        r, q = (1 - a) ** 0.5, a**0.5  # each conversion written out, against its reference
        pairs = {
            "score_to_eps": (-r * score, eps_mean),
            "eps_to_score": (-eps_mean / r, score),
            "score_to_x0": ((x_t + r**2 * score) / q, x0_mean),
            "x0_to_score": (-(x_t - q * x0_mean) / r**2, score),
            "eps_to_x0": ((x_t - r * eps_mean) / q, x0_mean),
            "x0_to_eps": ((x_t - q * x0_mean) / r, eps_mean),
        }
        assert set(got[step]) == set(pairs)
        for key, (u, v) in pairs.items():  # float32: the same numbers to rounding
            expected = ((u - v).norm() / v.norm()).item()
            assert got[step][key] == pytest.approx(expected, rel=1e-5, abs=1e-6), key
        assert got[step]["eps_to_x0"] < 1e-5  # the definition of eps, rearranged
    with pytest.raises(ValueError, match="^steps"):
        tweedie_errors(mix, s, (50,), pool_size=10)
    with pytest.raises(TypeError, match="^pool_size"):
        tweedie_errors(mix, s, (10,), pool_size=torch.randn(10, 2))


def test_chunk_floors_are_seeded_sliced_w2_of_two_draws():
    mix = three_blobs()
    draw = lambda n, g: mix.sample(n, generator=g)[0]  # noqa: E731
    got = chunk_floors(draw, 200, seeds=3, seed=7)
    assert len(got) == 3 and len(set(got)) == 3
    g = torch.Generator().manual_seed(7 + 2)
    a, b = draw(200, g), draw(200, g)
    assert got[2] == sliced_w2(a, b, generator=torch.Generator().manual_seed(2))
    with pytest.raises(ValueError, match="^n must be an int"):
        chunk_floors(draw, 1)
    with pytest.raises(TypeError, match="^draw"):
        chunk_floors("draw", 200)


def test_per_class_agreement_by_hand():
    mix = three_blobs(dtype=torch.float64)
    x = mix.means[mix.labels.argsort()].repeat_interleave(2, 0)  # 2 points at each class's means
    y = mix.labels.sort().values.repeat_interleave(2)
    got = per_class_agreement(x, y, mix)
    assert got == {c: 1.0 for c in range(mix.num_classes)}
    flipped = per_class_agreement(x, (y + 1) % mix.num_classes, mix)
    assert all(v == 0.0 for v in flipped.values())
    rows = per_class_agreement_and_spread(x, y, mix)
    assert got == {c: a for c, (a, _) in rows.items()}
    with pytest.raises(TypeError, match="^y must be an integer"):
        per_class_agreement(x, y.double(), mix)


def _twin_classes(s2: float = 0.5) -> GaussianMixture:
    """Two classes with the same Gaussian N(0, s2 I): the label carries nothing."""
    z = torch.zeros(2, 2, dtype=torch.float64)
    covs = s2 * torch.eye(2, dtype=torch.float64).expand(2, 2, 2)
    return GaussianMixture(z, covs, torch.ones(2, dtype=torch.float64), torch.tensor([0, 1]))


def test_label_gain_is_zero_when_the_label_says_nothing_and_loss_matches_closed_form():
    s, s2 = cosine_schedule(20), 0.5
    gain = label_gain(
        _twin_classes(s2),
        s,
        (3, 12),
        n=4000,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    assert gain.formula.abs().max() < 1e-12 and gain.direct.abs().max() < 1e-9
    for i, step in enumerate((3, 12)):
        a = float(s.alpha_bar[step])
        v = a * s2 + 1 - a  # x_t ~ N(0, v I): L*_u = d (1 - (1 - a) / v)
        assert abs(gain.loss_u[i].item() - 2 * (1 - (1 - a) / v)) < 0.08
    assert gain.loss_u.dtype == torch.float32 and gain.formula.shape == (2, 4000)


def test_label_gain_formula_is_the_loss_difference():
    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(20)
    gain = label_gain(
        mix, s, (2, 8), n=3000, generator=torch.Generator().manual_seed(1), progress=False
    )
    gap = gain.direct - gain.formula
    assert gain.formula.mean() > 0.01  # labels help here
    assert abs(gap.mean()) < 4 * gap.std() / gap.numel() ** 0.5
    assert torch.allclose(gain.loss_u - gain.loss_c, gain.direct.mean(1).float(), atol=1e-5)
    with pytest.raises(ValueError, match="^n must be an int"):
        label_gain(mix, s, (2,), n=0)
    with pytest.raises(TypeError, match="^generator"):
        label_gain(mix, s, (2,), generator=0)


# ---- several methods side by side (issue 18: labs 8b/8c's tables from the package) -------------


def test_sample_set_metrics_are_the_single_metrics():
    from diffcourse.metrics import class_agreement, sample_set_metrics, spread

    mixture = three_blobs()
    gen = torch.Generator().manual_seed(0)
    ref = mixture.sample(200, 0, generator=gen)[0]
    sets = {
        "exact": mixture.sample(200, 0, generator=gen)[0],
        "shifted": mixture.sample(200, 0, generator=gen)[0] + 0.5,
        "double": mixture.sample(200, 0, generator=gen)[0].double(),  # its own group
    }
    laws = {"p(x|0)": mixture_draw(mixture, 0), "p(x|1)": mixture_draw(mixture, 1)}
    out = sample_set_metrics(sets, mixture, 0, ref, laws, seed=4)
    for name, x in sets.items():
        assert list(out[name]) == ["agreement", "spread", "p(x|0)", "p(x|1)"]
        assert out[name]["agreement"] == class_agreement(x, 0, mixture)
        assert out[name]["spread"] == spread(x, ref)
        for law, draw in laws.items():
            assert out[name][law] == pytest.approx(
                distance_to_exact(x, draw, seed=4)["ratio"], rel=1e-12
            )
    assert out["shifted"]["p(x|0)"] > 2 * out["exact"]["p(x|0)"]
    assert out["exact"]["p(x|1)"] > 2 * out["exact"]["p(x|0)"]
    with pytest.raises(TypeError, match="samples"):
        sample_set_metrics([sets["exact"]], mixture, 0, ref, laws)
    with pytest.raises(TypeError, match="laws"):
        sample_set_metrics(sets, mixture, 0, ref, [mixture_draw(mixture, 0)])


def test_ddim_image_metrics_is_image_metrics_of_ddim_samples():
    from diffcourse.guidance import Variant
    from diffcourse.metrics import ddim_image_metrics, image_metrics_over_seeds, out_of_range
    from diffcourse.samplers import ddim_sample, seeded_noise

    class Judge(torch.nn.Module):  # the class is the sign of the first pixel
        def forward(self, x):
            return torch.stack([-x[:, 0, 0, 0], x[:, 0, 0, 0]], 1)

        def features(self, x):
            return x.flatten(1)[:, :3]

    s = cosine_schedule(20)
    y = torch.tensor([0, 1] * 10)
    ref = torch.randn(20, 1, 2, 2, generator=torch.Generator().manual_seed(3)).clamp(-1, 1)
    shrink = lambda x, t: 0.5 * x  # noqa: E731
    fns = {"zero": lambda x, t: torch.zeros_like(x), "shrink": Variant(shrink, 7)}
    out = ddim_image_metrics(Judge(), fns, s, 5, y, ref, y, seeds=2, shape=(1, 2, 2))
    by_hand = image_metrics_over_seeds(
        Judge(),
        lambda z, g: ddim_sample(shrink, z, s, 5, progress=False),
        y,
        ref,
        y,
        seeds=2,
        shape=(1, 2, 2),
    )
    raw = [
        ddim_sample(shrink, seeded_noise((20, 1, 2, 2), k), s, 5, progress=False) for k in (0, 1)
    ]
    over = sum(out_of_range(x) for x in raw) / 2  # measured before the clamp
    assert raw[0].abs().max() > 1 and over > 0
    assert out["shrink"] == {**by_hand.means(), "out_of_range": over, "NFE": 7}
    assert "NFE" not in out["zero"]
    assert {k: v for k, v in out["zero"].items() if k != "out_of_range"} != by_hand.means()
    with pytest.raises(ValueError, match="eps_fns must hold at least one"):
        ddim_image_metrics(Judge(), {}, s, 5, y, ref, y)
    with pytest.raises(ValueError, match="steps"):
        ddim_image_metrics(Judge(), fns, s, 50, y, ref, y)


def test_rescale_factors_closed_form():
    """cond = 2 x_t, uncond = x_t: eq. 170 is (1 + gamma) x_t, so the factor is 2 / (1 + gamma)."""
    from diffcourse.metrics import rescale_factors

    s = cosine_schedule(50)
    x0 = torch.randn(6, 1, 3, 3, generator=torch.Generator().manual_seed(1))
    out = rescale_factors(lambda x, t: 2 * x, lambda x, t: x, x0, s, [5, 30], 3.0)
    assert list(out) == [5, 30]
    assert all(abs(f - 0.5) < 1e-6 for f in out.values())
    gap = rescale_factors(lambda x, t: 2 * x, lambda x, t: 0 * x, x0, s, [5], 1.5)[5]
    assert abs(gap - 2 / 3) < 1e-6  # 2 x_t against 1.5 * 2 x_t
    # cond = 2 x_t + 1, uncond = x_t: eq. 170 is 4 x_t + 3; a std ignores the shifts, so the factor
    # is still 2 / 4 (a root-mean-square, which counts them, is not)
    shifted = rescale_factors(lambda x, t: 2 * x + 1, lambda x, t: x, x0, s, [5, 30], 3.0)
    assert all(abs(f - 0.5) < 1e-6 for f in shifted.values())
    # on v = (eps - sqrt(1 - a) x_t) / sqrt(a): cond = 2 x_t, uncond = x_t give v_c = k x_t and
    # v_u = j x_t, k = (2 - sqrt(1 - a)) / sqrt(a), j = (1 - sqrt(1 - a)) / sqrt(a); eq. 170 is
    # (3k - 2j) x_t, so the factor is |k / (3k - 2j)|
    on_v = rescale_factors(lambda x, t: 2 * x, lambda x, t: x, x0, s, [5, 30], 3.0, target="v")
    for step, f in on_v.items():
        r = (1 - s.alpha_bar[step].item()) ** 0.5
        assert abs(f - abs((2 - r) / (3 * (2 - r) - 2 * (1 - r)))) < 1e-6, step
    assert abs(on_v[30] - 0.5) > 0.01  # not the factor on eps
    with pytest.raises(ValueError, match="^target"):
        rescale_factors(lambda x, t: x, lambda x, t: x, x0, s, [5], 3.0, target="x0")
    with pytest.raises(TypeError, match="^x0 must be a floating-point"):
        rescale_factors(lambda x, t: x, lambda x, t: x, x0.long(), s, [5], 3.0)
    with pytest.raises(ValueError, match="gamma"):
        rescale_factors(lambda x, t: x, lambda x, t: x, x0, s, [5], -1.0)
    with pytest.raises(ValueError, match=r"^levels must be an int in \[0, 49\]"):
        rescale_factors(lambda x, t: x, lambda x, t: x, x0, s, [50], 3.0)


# ---- chapters 3 and 4: Bayes' rule for scores, noisy classifiers, the tilted law ----------------


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_bayes_rule_errors_are_rounding_and_match_a_hand_computation():
    from diffcourse.metrics import bayes_log_form_errors, bayes_score_errors
    from diffcourse.schedules import q_sample

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    log_form = bayes_log_form_errors(mix, s, [0, 25, 49], n=300, generator=_gen())
    assert list(log_form) == [0, 25, 49]
    assert all(a < 1e-12 and b < 1e-10 and kept for a, b, kept in log_form.values())
    scores = bayes_score_errors(mix, s, [0, 25, 49], n=300, generator=_gen())
    assert all(a < 1e-13 and b < 1e-13 for a, b in scores.values())
    # eq. 165 by hand on the same points (same generator, same order of draws)
    ((e165, _),) = bayes_score_errors(mix, s, [10], n=200, generator=_gen(1)).values()
    gen = _gen(1)
    x0, y = mix.sample(200, generator=gen)
    x_t = q_sample(x0, torch.full((200,), 10), s, generator=gen)
    m_t = mix.diffuse(float(s.alpha_bar[10]))
    x = x_t.clone().requires_grad_(True)
    g = torch.autograd.grad(m_t.class_log_posterior(x).gather(1, y[:, None]).sum(), x)[0]
    lhs, rhs = m_t.score(x_t, y), m_t.score(x_t) + g
    x = x_t.clone().requires_grad_(True)
    by_density = torch.autograd.grad(m_t.log_prob(x, y).sum(), x)[0]
    gaps = [(rhs - b).abs().max() / lhs.abs().max() for b in (lhs, by_density)]
    assert e165 == max(gaps).item()


def test_bayes_score_errors_see_an_error_the_two_closed_form_scores_share(monkeypatch):
    """Both closed-form scores 1% off in their -Sigma^-1 x term: it cancels in their difference,
    but not against autograd of the log-density, so the eq. 165 figure shows it."""
    from diffcourse.metrics import bayes_score_errors
    from diffcourse.mixture import GaussianMixture

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    right = GaussianMixture.score
    monkeypatch.setattr(GaussianMixture, "score", lambda m, x, y=None: right(m, x, y) - 0.01 * x)
    ((e165, e_back),) = bayes_score_errors(mix, s, [10], n=200, generator=_gen(1)).values()
    assert e165 > 1e-3 and e_back < 1e-10  # classifier_grad does not call score


def test_bayes_rule_errors_bad_input():
    from diffcourse.metrics import bayes_log_form_errors, bayes_score_errors

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    with pytest.raises(TypeError, match="mixture"):
        bayes_log_form_errors("three_blobs", s, [0])
    with pytest.raises(ValueError, match="steps"):
        bayes_score_errors(mix, s, [50])
    with pytest.raises(ValueError, match="^n must be an int"):
        bayes_score_errors(mix, s, [0], n=0)
    with pytest.raises(TypeError, match="generator"):
        bayes_log_form_errors(mix, s, [0], generator=0)


def test_mean_class_posterior_is_the_class_share_and_matches_a_hand_computation():
    from diffcourse.data import checkerboard
    from diffcourse.metrics import mean_class_posterior

    board, s = checkerboard(dtype=torch.float64), cosine_schedule(50)
    out = mean_class_posterior(board, s, [0, 49], n=4000, generator=_gen())
    for mean, se in out.values():  # E[p_t(y | x_t)] = p(y) at every t
        assert ((mean - board.class_weights).abs() < 4 * se + 1e-12).all()
    gen = _gen()
    x, _ = board.diffuse(float(s.alpha_bar[0])).sample(4000, generator=gen)
    post = board.diffuse(float(s.alpha_bar[0])).class_log_posterior(x).exp()
    assert torch.equal(out[0][0], post.mean(0))
    assert torch.equal(out[0][1], post.std(0) / 4000**0.5)
    with pytest.raises(ValueError, match="^n must be an int"):
        mean_class_posterior(board, s, [0], n=1)


def test_class_signal_fades_with_noise_and_matches_a_hand_loop():
    from diffcourse.metrics import class_signal

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    norms, acc = class_signal(mix, s, [0, 49], n=400, generator=_gen(), progress=False)
    assert norms.dtype == acc.dtype == torch.float32 and norms.shape == (2,)
    assert acc[0] > 0.9 and abs(acc[1] - 1 / 3) < 0.1 and norms[1] < 0.05 * norms[0]
    gen, m_t = _gen(), mix.diffuse(float(s.alpha_bar[0]))
    n_c, a_c = [], []
    for c in range(3):
        x, _ = m_t.sample(400, c, generator=gen)
        n_c.append(m_t.classifier_grad(x, c).norm(dim=1).mean().item())
        a_c.append((m_t.class_log_posterior(x).argmax(1) == c).double().mean().item())
    assert abs(norms[0].item() - sum(n_c) / 3) < 1e-6
    assert abs(acc[0].item() - sum(a_c) / 3) < 1e-6
    with pytest.raises(TypeError, match="steps"):
        class_signal(mix, s, 3)


class _BayesClassifier(torch.nn.Module):
    """The exact p_t(y | x_t) of a mixture as a noise-aware classifier (one step per batch)."""

    def __init__(self, mixture, schedule, flip: bool = False):
        super().__init__()
        self.mixture, self.schedule, self.flip = mixture, schedule, flip

    def forward(self, x, t):
        logits = self.mixture.diffuse(float(self.schedule.alpha_bar[int(t[0])]))
        logits = logits.class_log_posterior(x)
        return -logits if self.flip else logits

    def log_prob(self, x, t, y):
        return torch.log_softmax(self(x, t), 1).gather(1, y[:, None])[:, 0]


def test_noisy_classifier_check_of_the_bayes_classifier_itself():
    from diffcourse.metrics import noisy_classifier_check

    mix, s = three_blobs(), cosine_schedule(50)
    exact = noisy_classifier_check(
        _BayesClassifier(mix, s), mix, s, [0, 20, 49], n=500, generator=_gen(), progress=False
    )
    assert torch.equal(exact.accuracy, exact.bayes_accuracy)
    assert (exact.error_rms < 1e-4 * exact.grad_rms).all()
    assert exact.bayes_accuracy[0] > 0.9
    wrong = noisy_classifier_check(
        _BayesClassifier(mix, s, flip=True), mix, s, [0], n=500, generator=_gen(), progress=False
    )
    assert wrong.accuracy[0] < 0.1 and wrong.error_rms[0] > wrong.grad_rms[0]
    with pytest.raises(TypeError, match="classifier"):
        noisy_classifier_check(lambda x, t: x, mix, s, [0])


def test_classifier_guidance_check_shift_and_posterior_variance_ratio():
    from diffcourse.metrics import classifier_guidance_check

    mix, s = three_blobs(), cosine_schedule(50)
    out = classifier_guidance_check(mix, s, [0, 5, 30, 49], 4.0, n=500, generator=_gen())
    a, b = s.alpha_bar.tolist(), s.betas.tolist()
    for step, (err, shift, dn) in out.items():
        assert err < 1e-4 and abs(shift - 1) < 1e-3
        # D&N's shift is the posterior variance; ours beta_t / sqrt(alpha_t)
        a_prev = a[step - 1] if step else 1.0
        expected = (1 - a_prev) / (1 - a[step]) * (1 - b[step]) ** 0.5
        assert abs(dn - expected) < 1e-3 * max(expected, 1e-3)
    assert out[0][2] == 0.0
    # at t = T, beta_T = 0.999 and sigma_q^2(T) is nearly beta_T: the ratio is about sqrt(alpha_T)
    assert abs(out[49][2] / s.alphas[-1].item() ** 0.5 - 1) < 0.01
    with pytest.raises(ValueError, match="gamma"):
        classifier_guidance_check(mix, s, [0], 0.0)


def test_class_distance_ratios_near_one_for_exact_draws_and_large_for_wrong_ones():
    from diffcourse.metrics import class_distance_ratios

    mix = three_blobs()
    y = torch.arange(3).repeat_interleave(1000)
    x = torch.cat([mix.sample(1000, c, generator=_gen(c + 5))[0] for c in range(3)])
    ratios = class_distance_ratios(x, y, mix)
    assert list(ratios) == [0, 1, 2] and max(ratios.values()) < 1.8
    assert min(class_distance_ratios(1.3 * x, y, mix).values()) > 2
    with pytest.raises(TypeError, match="^y must be an integer"):
        class_distance_ratios(x, y.float(), mix)


def test_tilted_mean_along_in_closed_form():
    from diffcourse.metrics import tilted_mean_along

    mix = three_blobs(dtype=torch.float64)
    unit = mix.means[0] / mix.means[0].norm()
    # gamma = 1: p(x) p(y|x) = p(y) p(x|y), the class's own mean along its direction
    assert abs(tilted_mean_along(mix, 0, 1.0, unit, cells=301) - 1.2) < 1e-3
    # gamma = 0: p(x), whose mean is the weighted mean of the means (0 here) along any direction
    assert abs(tilted_mean_along(mix, 0, 0.0, unit, cells=301)) < 1e-3
    assert tilted_mean_along(mix, 0, 8.0, unit, cells=301) > 1.25  # beyond the class mean
    with pytest.raises(ValueError, match="direction"):
        tilted_mean_along(mix, 0, 1.0, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="gamma"):
        tilted_mean_along(mix, 0, -1.0, unit)


def test_mean_along_by_hand_and_against_the_tilted_law():
    from diffcourse.metrics import exact_draws, mean_along, tilted_mean_along

    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    assert mean_along(x, torch.tensor([1.0, 0.0])) == pytest.approx(2.0)
    # one direction per sample: (1 * 0 + 2 * 1 + 3 * 1 + (-1) * 0) / 2
    per = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert mean_along(x, per) == pytest.approx(2.5)
    # exact draws of the tilted law land where its grid mean says
    mix = three_blobs(dtype=torch.float64)
    unit = mix.means[0] / mix.means[0].norm()
    draws = exact_draws(mix, 0, 20000, seed=3, gamma=4.0)
    assert abs(mean_along(draws, unit) - tilted_mean_along(mix, 0, 4.0, unit)) < 0.01
    with pytest.raises(ValueError, match="direction"):
        mean_along(x, torch.ones(3))
    with pytest.raises(ValueError, match="direction"):
        mean_along(x, torch.ones(3, 2))
    with pytest.raises(TypeError, match="direction"):
        mean_along(x, torch.ones(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="direction"):
        mean_along(x, [1.0, 0.0])
    with pytest.raises(ValueError, match="x"):
        mean_along(torch.ones(0, 2), torch.ones(2))


def test_marginal_spread_in_closed_form_and_against_draws():
    from diffcourse.metrics import marginal_spread, spread
    from diffcourse.mixture import GaussianMixture

    mix = three_blobs(radius=1.2, std=0.5, dtype=torch.float64)
    # means on a circle around 0: between-class variance 1.2^2, within-class tr = 2 * 0.5^2
    assert abs(marginal_spread(mix) - (1 + 1.2**2 / (2 * 0.5**2))) < 1e-12
    x, _ = mix.sample(40000, generator=_gen())
    ref, _ = mix.sample(40000, 0, generator=_gen(1))
    assert abs(spread(x, ref) / marginal_spread(mix) - 1) < 0.03
    two = GaussianMixture(mix.means, mix.covs, mix.weights, torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="one component per class"):
        marginal_spread(two)
    uneven = GaussianMixture(
        mix.means, mix.covs * torch.tensor([1.0, 2.0, 1.0])[:, None, None], mix.weights, mix.labels
    )
    with pytest.raises(ValueError, match="covariance"):
        marginal_spread(uneven)
    with pytest.raises(TypeError, match="mixture"):
        marginal_spread(None)


# ---- chapter 7's judge, and sweeps of image samplers ----------------------------------------------


class _PixelJudge(torch.nn.Module):
    """Features: the first three pixels; the class: the sign of the first pixel."""

    def forward(self, x, t=None):
        return torch.stack([-x.flatten(1)[:, 0], x.flatten(1)[:, 0]], 1)

    def features(self, x):
        return x.flatten(1)[:, :3]


def test_feature_traces_by_hand():
    import numpy as np

    from diffcourse.metrics import feature_traces

    x = torch.randn(30, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.arange(3).repeat(10)
    within, total = feature_traces(_PixelJudge(), x, y)
    f = x.flatten(1)[:, :3].double().numpy()
    per_class = [np.cov(f[(y == c).numpy()].T).trace() for c in range(3)]
    assert within.item() == pytest.approx(np.mean(per_class))
    assert total.item() == pytest.approx(np.cov(f.T).trace())
    with pytest.raises(TypeError, match="^y must be an integer"):
        feature_traces(_PixelJudge(), x, y.float())
    with pytest.raises(ValueError, match="every class"):
        feature_traces(_PixelJudge(), x, torch.tensor([0] * 29 + [1]))
    with pytest.raises(ValueError, match="0..C-1"):  # found by fuzzing: -1 was left out
        feature_traces(_PixelJudge(), x, torch.cat([y[:-1], torch.tensor([-1])]))


def test_noisy_accuracy_from_certain_to_chance():
    from diffcourse.metrics import noisy_accuracy
    from diffcourse.schedules import linear_schedule

    y = torch.arange(2).repeat(200)
    x = (1 - 2 * y).float()[:, None, None, None].expand(-1, 1, 2, 2).contiguous()  # +1 or -1
    s = linear_schedule(1000)

    class Judge(torch.nn.Module):  # class 0 where the first pixel is > 0
        def forward(self, x_t, t):
            return -_PixelJudge()(x_t)

    acc = noisy_accuracy(Judge(), x, y, s, [0, 999])
    assert list(acc) == [0, 999] and acc[0] == 1.0 and 0.4 < acc[999] < 0.6
    assert noisy_accuracy(Judge(), x, y, s, [999]) == {999: acc[999]}  # seeded by the step
    with pytest.raises(ValueError, match="steps"):
        noisy_accuracy(Judge(), x, y, s, [1000])
    with pytest.raises(TypeError, match="classifier"):
        noisy_accuracy(lambda x_t, t: x_t, x, y, s, [0])


def test_image_sweep_is_image_metrics_over_seeds_for_each_sampler():
    from diffcourse.metrics import image_metrics_over_seeds, image_sweep
    from diffcourse.samplers import seeded_noise

    y = torch.tensor([0, 1] * 20)
    ref = seeded_noise((40, 1, 2, 2), 99).clamp(-1, 1)
    samplers = {1.0: lambda z, g: z, 2.0: lambda z, g: 2 * z + torch.randn(z.shape, generator=g)}
    out = image_sweep(_PixelJudge(), samplers, y, ref, y, seeds=2, shape=(1, 2, 2))
    assert list(out) == [1.0, 2.0]
    for key, sample in samplers.items():
        alone = image_metrics_over_seeds(_PixelJudge(), sample, y, ref, y, 2, (1, 2, 2))
        assert out[key].runs == alone.runs
    assert torch.equal(out.first[1.0], seeded_noise((40, 1, 2, 2), 0))  # seed 0, unclamped
    assert out.means("frechet") == {k: r.mean("frechet") for k, r in out.items()}
    assert out.curve("diversity")[1] == (out[2.0].mean("diversity"), out[2.0].std("diversity"))
    assert torch.equal(out.per_seed("fidelity")[2.0], out[2.0].values("fidelity"))
    assert out[1.0].mean_std(["frechet"]) == [(out[1.0].mean("frechet"), out[1.0].std("frechet"))]
    assert len(out[1.0].mean_std()) == 3
    with pytest.raises(ValueError, match="keys"):
        out[1.0].mean_std(["fid"])
    with pytest.raises(ValueError, match="samplers must hold at least one"):
        image_sweep(_PixelJudge(), {}, y, ref, y)
    with pytest.raises(TypeError, match="samplers must be a mapping"):
        image_sweep(_PixelJudge(), [], y, ref, y)
    with pytest.raises(TypeError, match="samplers"):
        image_sweep(_PixelJudge(), {1.0: "ddim"}, y, ref, y)


def test_image_sweep_mean_table_averages_each_metric_over_seeds():
    from diffcourse.metrics import ImageSweep, SeededImageMetrics

    runs = (
        {"fidelity": 0.5, "frechet": 2.0},
        {"fidelity": 1.0, "frechet": 4.0},
    )
    sweep = ImageSweep({1.5: SeededImageMetrics(runs)}, {})
    assert sweep.mean_table() == {1.5: {"fidelity": 0.75, "frechet": 3.0}}


# ---- chapters 5 and 6's measurements (labs 5 and 6) -------------------------------------------------
from diffcourse import metrics  # noqa: E402
from diffcourse.guidance import batched_cfg_eps_fn  # noqa: E402
from diffcourse.models import MLPDenoiser  # noqa: E402
from diffcourse.samplers import labels_and_noise, seeded_sample  # noqa: E402


def _net(T=20):
    torch.manual_seed(0)
    return MLPDenoiser(dim=2, T=T, hidden=16, depth=2, num_classes=3)


def test_branch_errors_are_relative_eps_errors_of_each_branch():
    mix, s, net = three_blobs(), cosine_schedule(20), _net()
    err = metrics.branch_errors({"a": net}, mix, s, [3, 12], n=200)
    assert list(err) == [("cond", "a"), ("uncond", "a")]
    exact = partial(exact_eps_fn, mix, s)
    cond = metrics.relative_eps_error(net.eps_fn, exact, mix, s, [3, 12], n=200)
    uncond = metrics.relative_eps_error(
        lambda y: net.eps_fn(None), lambda y: exact(), mix, s, [3, 12], n=200
    )
    assert torch.equal(err["cond", "a"], cond) and torch.equal(err["uncond", "a"], uncond)
    assert not torch.equal(cond, uncond)
    with pytest.raises(TypeError, match="models"):
        metrics.branch_errors(net, mix, s, [3])


def test_window_means_by_hand():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 6.0])
    t = torch.tensor([1, 6, 11, 16, 21])
    out = metrics.window_means(values, t, {"early": (1, 6), "late": (12, 21)})
    assert out == {"early": 1.5, "late": 5.0}
    with pytest.raises(ValueError, match="windows"):
        metrics.window_means(values, t, {"none": (30, 40)})


def test_guidance_sweep_measures_each_run_as_the_lab_did():
    mix, s = three_blobs(), cosine_schedule(20)
    y, noise = labels_and_noise(3, 20, (2,))
    sample = partial(seeded_sample, noise=noise, schedule=s, seed=2)
    builders = {"exact": partial(exact_cfg_eps_fn, mix, s, y)}
    refs = metrics.class_references(mix, 100)
    sweep = metrics.guidance_sweep(builders, [1.0, 4.0], sample, y, mix, refs)
    assert list(sweep.values) == [("exact", 1.0), ("exact", 4.0)]
    x = sample(exact_cfg_eps_fn(mix, s, y, 4.0))
    assert torch.equal(sweep.samples["exact", 4.0], x)
    assert sweep.values["exact", 4.0] == metrics.agreement_and_spread(x, y, mix, refs)
    assert all(v > 0 for v in sweep.seconds.values())
    only = metrics.guidance_sweep(builders, {"exact": [2.0]}, sample, y, mix)
    assert list(only.values) == [("exact", 2.0)] and only.values["exact", 2.0][1] is None
    with pytest.raises(ValueError, match="gammas"):
        metrics.guidance_sweep(builders, {"CFG": [1.0]}, sample, y, mix)


class _ExactBranches(torch.nn.Module):
    """A "network" whose two branches are the mixture's exact ones, each scaled by a factor (1:
    exact): with both 1, eq. 170 on it is exact CFG."""

    num_classes, null_label = 3, 3

    def __init__(self, mix, s, cond_factor=1.0, uncond_factor=1.0):
        super().__init__()
        self.mix, self.s, self.factors = mix, s, (cond_factor, uncond_factor)
        self.unused = torch.nn.Parameter(torch.zeros(1))  # where the guidance reads the device

    def forward(self, x, t, y):
        cond = self.factors[0] * exact_eps_fn(self.mix, self.s, y.clamp(max=2))(x, t)
        uncond = self.factors[1] * exact_eps_fn(self.mix, self.s)(x, t)
        return torch.where((y == 3)[:, None], uncond, cond)


def test_guided_eps_errors_are_zero_for_a_perfect_rule_and_grow_with_gamma():
    mix, s, net = three_blobs(), cosine_schedule(20), _net()
    off = _ExactBranches(mix, s, 1.02, 0.97)  # each branch off by a few percent
    models = {"net": net, "exact": _ExactBranches(mix, s), "off": off}
    errors = metrics.guided_eps_errors(models, mix, s, [1.0, 4.0], [3, 12], n=200)
    assert max(errors["exact"]) < 1e-5  # a perfect pair of branches: no error at any gamma
    assert abs(errors["off"][0] - 0.02) < 1e-4  # gamma = 1: the conditional branch's error
    assert errors["off"][1] > 3 * errors["off"][0]  # eq. 170 multiplies the branches' errors
    ours = lambda y: batched_cfg_eps_fn(net, y, 4.0)  # noqa: E731
    exact = lambda y: exact_cfg_eps_fn(mix, s, y, 4.0)  # noqa: E731
    by_hand = metrics.relative_eps_error(ours, exact, mix, s, [3, 12], n=200).mean().item()
    assert errors["net"][1] == by_hand
    with pytest.raises(TypeError, match="models"):
        metrics.guided_eps_errors({"net": "model"}, mix, s, [1.0], [3])


def test_tilted_comparison_and_exact_draws():
    mix = three_blobs()
    tilted = metrics.exact_draws(mix, 0, 2000, seed=3, gamma=2.0)
    expected = sample_tilted(mix, 0, 2.0, 2000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(tilted, expected)
    ref = metrics.exact_draws(mix, 0, 2000, seed=7)
    assert torch.equal(ref, mix.sample(2000, 0, generator=torch.Generator().manual_seed(7))[0])
    out = metrics.tilted_comparison({"tilted": tilted, "p(x|y)": ref}, mix, 0, 2.0, ref)
    dist = metrics.distances_to_exact({"tilted": tilted}, metrics.tilted_draw(mix, 0, 2.0), seed=4)
    assert out["tilted"][0] == dist["tilted"]["ratio"] and out["p(x|y)"][1] == 1.0
    assert out["p(x|y)"][0] > 1.2 * out["tilted"][0]  # p(x|y) is not the tilted law
    with pytest.raises(TypeError, match="^n must be an int"):
        metrics.exact_draws(mix, 0, 2.5)


def test_relative_grad_errors_is_one_call_per_classifier():
    from diffcourse.guidance import implicit_grad_for

    mix, s = three_blobs(), cosine_schedule(20)
    grad_for = {"exact": implicit_grad_for(partial(exact_eps_fn, mix, s), s)}
    out = metrics.relative_grad_errors(grad_for, mix, s, [2, 10], n=300)
    assert out["exact"].max() < 1e-5
    with pytest.raises(ValueError, match="grad_fors must hold at least one"):
        metrics.relative_grad_errors({}, mix, s, [2])
    with pytest.raises(TypeError, match="grad_fors must be a mapping"):
        metrics.relative_grad_errors([], mix, s, [2])


def test_a_wrong_shaped_eps_fn_or_a_label_the_classifier_lacks_is_refused():
    """Found by fuzzing: an eps_fn returning [N, 1] broadcast into a plausible error of 0.99; a
    label the classifier cannot predict counted as a miss."""
    from diffcourse.metrics import noisy_accuracy, relative_score_error

    mix, s = three_blobs(), cosine_schedule(10)
    eps = exact_eps_fn(mix, s)
    with pytest.raises(ValueError, match=r"^eps_fn's output must have shape"):
        relative_score_error(lambda x, t: eps(x, t)[:, :1], mix, s, [5], n=16)
    clf = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=None)
    x = torch.randn(12, 1, 8, 8)
    for y in (torch.full((12,), 99), torch.full((12,), -1)):
        with pytest.raises(ValueError, match=r"^y must lie in 0\.\.9"):
            fidelity(clf, x, y)
    noisy = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=10)
    with pytest.raises(ValueError, match=r"^y must lie in 0\.\.9"):
        noisy_accuracy(noisy, x, torch.full((12,), 10), s, [3])


def test_knn_entropy_k_is_an_int():
    x = torch.randn(20, 2)
    with pytest.raises(TypeError, match="^k must be an int"):
        knn_entropy(x, k=2.0)
    with pytest.raises(ValueError, match="^k must be an int in"):
        knn_entropy(x, k=20)


def test_an_empty_sample_has_no_share():
    """Found by fuzzing: class_agreement and fidelity of no samples were NaN."""
    from diffcourse.metrics import class_agreement

    with pytest.raises(ValueError, match="^x must hold at least one sample"):
        class_agreement(torch.zeros(0, 2), 0, three_blobs())
    clf = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=None)
    with pytest.raises(ValueError, match="^x must hold at least one sample"):
        fidelity(clf, torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))


def test_out_of_range_is_the_mean_distance_outside_the_range():
    from diffcourse.metrics import out_of_range

    x = torch.tensor([[-3.0, -1.0, 0.0, 0.5], [1.0, 1.5, 2.0, -1.25]])
    assert out_of_range(x) == pytest.approx((2.0 + 0.5 + 1.0 + 0.25) / 8)
    assert out_of_range(x.clamp(-1, 1)) == 0.0
    assert out_of_range(x, low=-4, high=4) == 0.0
    assert out_of_range(x, low=0, high=0.5) == pytest.approx((3 + 1 + 0.5 + 1 + 1.5 + 1.25) / 8)
    with pytest.raises(TypeError, match="x"):
        out_of_range(torch.tensor([3, 0]))
    with pytest.raises(ValueError, match="high"):
        out_of_range(x, low=1, high=1)
    with pytest.raises(TypeError, match="low"):
        out_of_range(x, low=True)
    with pytest.raises(ValueError, match="x"):
        out_of_range(x[:0])


def _empty_sample_calls():
    from diffcourse import metrics
    from diffcourse.schedules import linear_schedule

    mix, e2, e1 = three_blobs(), torch.empty(0, 2), torch.empty(0, dtype=torch.long)
    img, no_img, yi = torch.rand(20, 1, 8, 8), torch.empty(0, 1, 8, 8), torch.arange(20) % 10
    judge = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=None)
    noisy = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=10)
    return {
        "diversity": lambda: metrics.diversity(no_img, e1, img, yi),
        "knn_entropy": lambda: metrics.knn_entropy(e2),
        "per_class_agreement": lambda: metrics.per_class_agreement(e2, e1, mix),
        "agreement_and_spread": lambda: metrics.agreement_and_spread(e2, e1, mix),
        "class_distance_ratios": lambda: metrics.class_distance_ratios(e2, e1, mix),
        "feature_traces": lambda: metrics.feature_traces(judge, no_img, e1),
        "noisy_accuracy": lambda: metrics.noisy_accuracy(
            noisy, no_img, e1, linear_schedule(10), [0]
        ),
    }


@pytest.mark.parametrize("name", list(_empty_sample_calls()))
def test_an_empty_sample_set_is_refused_by_name(name):
    """Found by calling each sample-taking metric with no samples: some returned {} or NaN
    silently (per_class_agreement, class_distance_ratios, noisy_accuracy), others failed inside
    torch or Python (diversity, feature_traces, agreement_and_spread) or named k (knn_entropy)."""
    with pytest.raises(ValueError, match="^x must hold at least"):
        _empty_sample_calls()[name]()


def test_a_nan_sample_is_refused_by_name():
    """Found by calling each metric with one NaN entry: these returned NaN, or a number computed
    around it (noisy_accuracy), silently; the other metrics already refused it."""
    from diffcourse import metrics
    from diffcourse.schedules import linear_schedule

    x = torch.randn(30, 2)
    x[3, 0] = float("nan")
    img, yi = torch.rand(20, 1, 8, 8), torch.arange(20) % 10
    img[2, 0, 0, 0] = float("nan")
    judge = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=None)
    noisy = ConvClassifier(channels=1, size=8, num_classes=10, width=8, T=10)
    calls = {
        "x": [
            lambda: metrics.mean_along(x, torch.tensor([1.0, 0.0])),
            lambda: metrics.feature_traces(judge, img, yi),
            lambda: metrics.noisy_accuracy(noisy, img, yi, linear_schedule(10), [0]),
            lambda: metrics.out_of_range(img),
        ],
        "values": [
            lambda: metrics.window_means(
                torch.tensor([1.0, float("nan"), 2.0]), torch.arange(1, 4), {"w": (1, 3)}
            )
        ],
    }
    for name, fns in calls.items():
        for fn in fns:
            with pytest.raises(ValueError, match=f"^{name} holds NaN or infinite values"):
                fn()
