"""The measurements of chapter 12's claims, on small cases whose answer is known."""

import pytest
import torch

from diffcourse import claims
from diffcourse.data import round_mixture, three_blobs
from diffcourse.schedules import cosine_schedule

S = cosine_schedule(40)


def test_two_classes_and_the_reduction_to_one_dimension():
    m = claims.two_classes(16, 0.5)
    assert m.dim == 16 and torch.allclose(m.means[0], torch.full((16,), 0.5, dtype=torch.float64))
    assert claims.reduction_gap(16, S, 3.0, n=64) < 1e-9
    with pytest.raises(ValueError, match="^d must be an int >= 1"):
        claims.two_classes(0)


def test_dimension_sweep_at_gamma_one_samples_the_class():
    """Unguided, the sampler draws the class: no shift, unit spread (up to DDPM's 40 coarse levels)."""
    out = claims.dimension_sweep([4, 64], S, 1.0, n=8000)
    for (d, name), (shift, std) in out.items():
        assert abs(shift) < 0.06 and abs(std - 1) < 0.08, (d, name)
    guided = claims.dimension_sweep([4], S, 4.0, n=4000)
    assert guided[4, "DDPM"][0] > 0.3  # guidance pushes along m, away from the other class
    # how it uses d: with DDIM the run along m is the 1-D run of separation mu sqrt(d) (chapter 12's
    # reduction), so d = 16 at separation 1/2 each is d = 1 at separation 2
    at16 = claims.dimension_sweep([16], S, 4.0, n=4000, mu=0.5)[16, "DDIM"]
    at1 = claims.dimension_sweep([1], S, 4.0, n=4000, mu=2.0)[1, "DDIM"]
    assert at16 == pytest.approx(at1, rel=1e-6)


def test_confidence_and_entropy_shapes_and_the_unguided_value():
    m = three_blobs(dtype=torch.float64)
    out = claims.confidence_and_entropy(m, 0, [1.0, 3.0], S, n=1500, levels=20)
    assert set(out) == {(s, g) for s in ("DDPM", "DDIM") for g in (1.0, 3.0)}
    exact_conf = m.class_log_posterior(
        m.sample(20000, 0, generator=torch.Generator().manual_seed(0))[0]
    )[:, 0]
    assert abs(out["DDPM", 1.0][0] - exact_conf.exp().mean().item()) < 0.02
    assert out["DDIM", 3.0][1] < out["DDIM", 1.0][1]
    # the asked class's own posterior: y = 1 reads column 1, not column 0
    out1 = claims.confidence_and_entropy(m, 1, [1.0], S, n=1500, levels=20)
    exact1 = m.class_log_posterior(
        m.sample(20000, 1, generator=torch.Generator().manual_seed(0))[0]
    )[:, 1]
    assert abs(out1["DDPM", 1.0][0] - exact1.exp().mean().item()) < 0.02


def test_interval_classes_and_the_edge():
    chain = claims.interval_classes(11, 0.03)
    assert chain.num_components == 22 and chain.dim == 1
    out = claims.edge_and_support(
        chain, S, [1.0], [0.0], (1.9, 2.09), (0.91, 2.09), n=4000, levels=40
    )
    far, off = out[0.0, "DDPM", 1.0]
    assert abs(far - 0.1) < 0.03 and off < 0.01  # unguided: a tenth of the class in its far tenth
    # guided at 16, exact: further out, still inside; with the error 0.1 added to the conditional
    # prediction, off the support (claim 3); here 0.20 and 1.00 far, 0.95 and 0.88 off
    err = claims.edge_and_support(
        chain, S, [1.0, 16.0], [0.0, 0.1], (1.9, 2.09), (0.91, 2.09), n=4000, levels=40
    )
    for sampler in ("DDPM", "DDIM"):
        assert err[0.0, sampler, 16.0][0] > err[0.0, sampler, 1.0][0] + 0.05, sampler
        assert err[0.0, sampler, 16.0][1] < 0.01 and err[0.1, sampler, 16.0][1] > 0.5, sampler


def test_noise_to_signal_levels_and_coverage():
    low, high = claims.noise_to_signal_levels(S, 1 / 3, 3.0)
    ab = S.alpha_bar
    ratio = ((1 - ab) / ab).sqrt()
    assert (
        ratio[low] >= 1 / 3 and ratio[high] <= 3 and ratio[low - 1] < 1 / 3 and ratio[high + 1] > 3
    )
    with pytest.raises(ValueError, match="noise-to-signal"):
        claims.noise_to_signal_levels(S, 1e6, 1e7)
    two = round_mixture([[-2, 0], [1, 0], [2.5, 0]], 0.3, [0, 0, 1])
    spans = {"none": None, "interval": (low, high), "all": (0, 39)}
    cover = claims.coverage_by_span(two, 0, 3.0, S, spans, n=2000, levels=20)
    assert cover["none"] > 0.95 and cover["all"] < cover["none"] - 0.1
    # chapter 12: the interval drops the near mode less than every level does, but still drops it
    assert cover["all"] + 0.1 < cover["interval"] < cover["none"] - 0.05


def test_feedback_check_in_its_own_world():
    sharp = round_mixture([[0.3, 1.4], [-0.3, 1.0]], 0.2, [0, 0])
    out = claims.feedback_check(
        sharp,
        three_blobs(dtype=torch.float64),
        0.3,
        [200.0],
        cosine_schedule(60),
        n=2000,
        levels=60,
    )
    assert out["score error"] < 1e-8
    assert out["feedback, cap 200"] < out["eq. 170, gamma = 1/pi"] / 3
    world = claims.additive_world(sharp, three_blobs(dtype=torch.float64), 0.3)
    assert abs(world.weights[:2].sum().item() - 0.3) < 1e-12
    with pytest.raises(ValueError, match="^pi must be in"):
        claims.additive_world(sharp, sharp, 0.0)


def test_stand_in_error_is_small_at_high_noise_and_large_at_low():
    err = claims.stand_in_error(three_blobs(dtype=torch.float64), S, [0, 39], n=1000)
    assert err[0] > 1 and err[1] < 0.1


def test_stand_in_error_seed_draws_the_points_too():
    """``seed`` draws the labels and, offset by one, the points x_t; before, the points came from
    relative_score_error's default seed whatever the seed asked."""
    from diffcourse.metrics import relative_score_error
    from diffcourse.mixture import exact_eps_fn

    mix = three_blobs(dtype=torch.float64)
    got = claims.stand_in_error(mix, S, [5, 20], n=300, seed=4)
    labels = torch.randint(0, 3, (300,), generator=torch.Generator().manual_seed(4))
    want = relative_score_error(exact_eps_fn(mix, S, labels), mix, S, [5, 20], n=300, seed=5)
    assert torch.equal(got, want)


def test_is_monotone():
    assert claims.is_monotone([1, 2, 3]) and not claims.is_monotone([1, 2, 2])
    assert claims.is_monotone([1, 2, 2], strict=False)
    assert claims.is_monotone([3, 1, 0], increasing=False) and not claims.is_monotone(
        [3, 4], increasing=False
    )


def test_is_monotone_margin():
    # each step must clear the margin: 0.5 then 0.02 fails a margin of 0.05
    assert claims.is_monotone([1, 1.5, 1.6], margin=0.05)
    assert not claims.is_monotone([1, 1.5, 1.52], margin=0.05)
    assert claims.is_monotone([3, 2, 1], increasing=False, margin=0.9)
    assert not claims.is_monotone([3, 2, 1], increasing=False, margin=1.0)
    assert claims.is_monotone([3, 2, 1], increasing=False, strict=False, margin=1.0)
    # a negative margin tolerates a small step back, not a large one
    assert claims.is_monotone([0.5, 0.495, 0.9], strict=False, margin=-0.01)
    assert not claims.is_monotone([0.5, 0.48, 0.9], strict=False, margin=-0.01)


def test_ddpm_against_ddim_reads_the_board():
    from diffcourse.leaderboard import Setting, evaluate, package_rules, reference_rules

    setting = Setting(three_blobs(), S, 0, 3.0, levels=10, name="blobs")
    rules = [
        r
        for r in package_rules() + reference_rules()
        if r.name in ("eq. 170, DDPM", "eq. 170, DDIM", "exact draws from the tilted law")
    ]
    rows, kept = evaluate(rules, setting, 600, seeds=(0, 1, 2), keep_samples=True)
    out = claims.ddpm_against_ddim(rows, {"blobs": kept}, {"blobs": 600})
    gaps, beaten = out["blobs"]
    assert len(gaps) == 3 and min(gaps) > 1.5 and beaten == ["DDPM", "DDIM"]


def test_learned_icg_runs_a_network_three_ways():
    from diffcourse import guidance
    from diffcourse.data import digits_mixture
    from diffcourse.metrics import agreement_and_spread
    from diffcourse.models import UNet
    from diffcourse.samplers import ddim_sample, seeded_noise

    torch.manual_seed(0)
    net = UNet(channels=1, size=8, T=40, num_classes=10, width=8).eval()
    mixture = digits_mixture()
    out = claims.learned_icg(net, mixture, 3, 3.0, S, n=20, seed=16, levels=5)
    assert set(out) == {"unguided", "eq. 170", "ICG"}
    assert all(0 <= a <= 1 and s > 0 for a, s in out.values())
    # by hand, from the same noise and draws: the three rules at their own scales
    labels = torch.full((20,), 3, dtype=torch.long)
    gen = torch.Generator().manual_seed(16)
    icg = guidance.independent_condition_eps_fn(net, labels, 3.0, 10, gen)
    refs = {3: mixture.sample(20, 3, generator=gen)[0]}
    z = seeded_noise((20, 1, 8, 8), 16, "cpu")
    rules = {
        "unguided": lambda x, t: net(x, t, labels),
        "eq. 170": lambda x, t: 3.0 * net(x, t, labels) - 2.0 * net(x, t, net.null_labels(20)),
        "ICG": lambda x, t: 3.0 * net(x, t, labels) - 2.0 * net(x, t, icg.labels),
    }
    for name, fn in rules.items():
        x = ddim_sample(fn, z, S, steps=5, progress=False).reshape(20, -1)
        agree, spread = agreement_and_spread(x, labels, mixture, refs)
        assert abs(agree - out[name][0]) < 1e-6 and abs(spread - out[name][1]) < 1e-4, name
    assert len({s for _, s in out.values()}) == 3  # three different rules, three spreads


# ---- chapter 8's variants ---------------------------------------------------------------------


def _small_unets(T: int = 100):
    from diffcourse.models import UNet

    torch.manual_seed(0)
    good = UNet(channels=1, size=8, T=T, num_classes=10, width=8).eval()
    weak = UNet(channels=1, size=8, T=T, num_classes=10, width=8).eval()
    return good, weak


def test_variant_formula_gaps_hold_and_catch_a_wrong_rule(monkeypatch):
    from diffcourse import guidance
    from diffcourse.schedules import linear_schedule

    good, weak = _small_unets(300)
    x0 = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    y = torch.arange(6)
    s = linear_schedule(300)  # its interval, (55, 260), leaves levels above it
    seen = []  # run in full float32 (no TF32 on a GPU, whose rounding depends on the batch)
    good.register_forward_hook(lambda *_: seen.append(torch.backends.cudnn.allow_tf32))
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # a GPU's default
    out = claims.variant_formula_gaps(good, weak, x0, y, s, 10, 3.0)
    assert seen and not any(seen)
    assert len(out.gaps) == 12 and max(out.gaps.values()) < 1e-4
    # the untrained nets' D(cfg) leaves [-1, 1] (in every image here): thresholding is exercised,
    # its dynamic s > 1 too
    assert 0 < out.clipped <= 1 and 0 < out.scaled <= out.clipped
    rescaled = guidance.rescaled_cfg  # a wrong factor in one rule shows in its gap only
    monkeypatch.setattr(guidance, "rescaled_cfg", lambda *a: 1.1 * rescaled(*a))
    wrong = claims.variant_formula_gaps(good, weak, x0, y, s, 10, 3.0).gaps
    assert wrong["rescaled"] > 1e-2 and wrong["interval, inside"] < 1e-4
    monkeypatch.setattr(guidance, "rescaled_cfg", rescaled)  # v taken as the clean estimate:
    monkeypatch.setattr(guidance, "eps_to_v", guidance.eps_to_x0)  # only "rescaled, v" moves
    wrong = claims.variant_formula_gaps(good, weak, x0, y, s, 10, 3.0).gaps
    assert wrong["rescaled, v"] > 1e-2 and wrong["rescaled"] < 1e-4
    with pytest.raises(TypeError, match="^y must be an integer tensor"):
        claims.variant_formula_gaps(good, weak, x0, y.float(), s, 10, 3.0)

    short = _small_unets(100)  # linear_schedule(100)'s interval reaches its last step
    with pytest.raises(ValueError, match="last step"):
        claims.variant_formula_gaps(*short, x0, y, linear_schedule(100), 10, 3.0)


def test_variant_identities_two_hold_one_does_not():
    from diffcourse.mixture import exact_eps_fn

    m = three_blobs()
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(0))
    c, u = exact_eps_fn(m, S, 0), exact_eps_fn(m, S)
    out = claims.variant_identities(c, u, S, z, 3.0, 0.3, levels=10)
    assert list(out) == [
        "APG, all changes off: eq. 170",
        "CFG++ at 0.3: gamma_eff",
        "CFG++ at 0.3: eq. 170 at 0.3",
    ]
    first, second, third = out.values()
    assert first < 1e-4 and second < 1e-4 and third > 0.1
    with pytest.raises(ValueError, match="lam"):
        claims.variant_identities(c, u, S, z, 3.0, 1.5)


def test_variants_on_mixture_rows():
    from diffcourse.metrics import class_agreement
    from diffcourse.mixture import exact_eps_fn
    from diffcourse.samplers import ddim_sample

    m = three_blobs()
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    ref = m.sample(300, 0, generator=torch.Generator().manual_seed(7))[0]
    weak = exact_eps_fn(m, S, 0)  # the exact model as its own weak one: autoguidance = it
    out = claims.variants_on_mixture(m, S, 0, 3.0, z, 10, weak, ref)
    assert list(out) == [
        "conditional",
        "CFG",
        "interval",
        "autoguidance",
        "APG",
        "CFG++",
        "DDPM",
        "exact tilted",
    ]
    assert out["DDPM"]["NFE"] == 80 and out["exact tilted"]["NFE"] == 0
    assert out["conditional"]["NFE"] == 10
    x = ddim_sample(exact_eps_fn(m, S, 0), z, S, 10, progress=False)
    assert out["conditional"]["agreement"] == class_agreement(x, 0, m)
    assert out["autoguidance"]["spread"] == pytest.approx(out["conditional"]["spread"], rel=1e-4)
    assert out["exact tilted"]["tilted"] < out["conditional"]["tilted"]
    # every guided row against its rule built here from guidance's own functions, at gamma = 3
    from diffcourse import guidance
    from diffcourse.metrics import spread
    from diffcourse.samplers import ddpm_sample
    from diffcourse.schedules import nsr_interval

    c, u = exact_eps_fn(m, S, 0), exact_eps_fn(m, S)
    rules = {
        "CFG": guidance.classifier_free_eps_fn(c, u, 3.0),
        "interval": guidance.interval_cfg_eps_fn(c, u, 3.0, *nsr_interval(S)),
        "APG": guidance.apg_eps_fn(c, u, S, 3.0, eta=0.0, beta=-0.5),
        "CFG++": guidance.cfgpp_eps_fn(c, u, guidance.lam_matching(S, 10, 3.0)),
    }
    runs = {k: ddim_sample(f, z, S, 10, progress=False) for k, f in rules.items()}
    gen = torch.Generator().manual_seed(2)
    runs["DDPM"] = ddpm_sample(rules["CFG"], z, S, generator=gen, progress=False)
    for name, x in runs.items():
        assert out[name]["agreement"] == pytest.approx(class_agreement(x, 0, m), abs=1e-12), name
        assert out[name]["spread"] == pytest.approx(spread(x, ref), rel=1e-9), name
    assert out["CFG"]["spread"] < out["conditional"]["spread"] - 0.1  # and guided it is
    with pytest.raises(TypeError, match="noise"):
        claims.variants_on_mixture(m, S, 0, 3.0, z.long(), 10, weak, ref)


# ---- chapter 6's calculations (lab 6) ---------------------------------------------------------------


def test_tilt_and_noise_variances_are_the_chapters_closed_forms():
    s2, v2, g, mu = 0.25, 1.0, 2.0, 1.0
    a = torch.tensor([0.999, 0.5, 0.1], dtype=torch.float64)
    curves = claims.tilt_and_noise_variances(s2, v2, g, mu, a)
    ttn = a / (g / s2 + (1 - g) / v2) + 1 - a
    ntt = 1 / (g / (a * s2 + 1 - a) + (1 - g) / (a * v2 + 1 - a))
    assert torch.allclose(curves, torch.stack([ttn, ntt]), atol=1e-12)
    with pytest.raises(ValueError, match="gamma"):
        claims.tilt_and_noise_variances(s2, v2, -1.0, mu, a)


def test_tilt_and_noise_formula_error_is_rounding_and_sees_a_wrong_curve(monkeypatch):
    a = torch.tensor([0.999, 0.5, 0.1], dtype=torch.float64)
    # by hand at a = 0.5: tilted variance 1 / (8 - 1), noised 0.5 / 7 + 0.5 = 4 / 7
    assert claims.tilt_and_noise_variances(0.25, 1.0, 2.0, 1.0, [0.5])[0, 0] == pytest.approx(4 / 7)
    assert claims.tilt_and_noise_formula_error(0.25, 1.0, 2.0, 1.0, a) < 1e-12
    real = claims.tilt_and_noise_variances
    monkeypatch.setattr(claims, "tilt_and_noise_variances", lambda *args: real(*args) * 1.01)
    assert claims.tilt_and_noise_formula_error(0.25, 1.0, 2.0, 1.0, a) > 1e-3
    with pytest.raises(ValueError, match="cls_var"):
        claims.tilt_and_noise_formula_error(0.0, 1.0, 2.0, 1.0, a)
    with pytest.raises(TypeError, match="data_var"):
        claims.tilt_and_noise_formula_error(0.25, "1", 2.0, 1.0, a)


def test_cfg_score_gap_is_rounding_only_and_sees_a_wrong_gamma(monkeypatch):
    mix, s = three_blobs(), cosine_schedule(50)
    assert claims.cfg_score_gap(mix, s, 0, [2.0, 4.0], steps=(5, 30), n=50) < 1e-8
    real = claims.exact_cfg_eps_fn
    monkeypatch.setattr(claims, "exact_cfg_eps_fn", lambda m, s, y, g: real(m, s, y, 1.1 * g))
    assert claims.cfg_score_gap(mix, s, 0, [2.0], steps=(5, 30), n=50) > 1e-3
    with pytest.raises(TypeError, match="^n must be an int"):
        claims.cfg_score_gap(mix, s, 0, [2.0], n=2.5)


def test_langevin_settles_at_the_chapters_variance():
    alpha, r = 0.98, 0.5
    settled = claims.langevin_settled(0.3, alpha, r, n=50_000, steps=30)
    assert abs(settled - (1 + alpha * r**2)) < 5 * (1 + alpha * r**2) / 50_000**0.5
    with pytest.raises(ValueError, match="^c must be"):
        claims.langevin_settled(0.0, alpha, r)


def test_pc_gaussian_ratio_near_its_excess():
    s = cosine_schedule(200)  # the lab's chain: its last corrector steps run at t = 1
    # at r = 0.5 the excess, alpha r^2 = 0.25, stands far above the ratio's sampling noise (0.01);
    # at the lab's r = 0.1 it would be 0.01, the size of that noise
    ratio = claims.pc_gaussian_ratio(s, 0.25, 5, 0.5, n=20_000)
    assert abs(ratio - (1 + float(s.alphas[0]) * 0.25)) < 0.02
    with pytest.raises(TypeError, match="^n must be an int"):
        claims.pc_gaussian_ratio(s, 0.25, 2, 0.1, n=1.5)


def test_scale_schedules_rows_are_eq_170_with_each_scale():
    from diffcourse.guidance import classifier_free_eps_fn, per_level_cfg_eps_fn, ramped_gamma
    from diffcourse.metrics import (
        class_agreement,
        distance_to_exact,
        mixture_draw,
        spread,
        tilted_draw,
    )
    from diffcourse.mixture import exact_eps_fn
    from diffcourse.samplers import ddim_sample

    m = three_blobs()
    z = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    ref = m.sample(300, 0, generator=torch.Generator().manual_seed(7))[0]
    out = claims.scale_schedules(m, S, 0, [1.0, 3.0], z, 10, ref)
    assert list(out) == [(n, g) for g in (1.0, 3.0) for n in ("constant", "rising", "falling")]
    c, u = exact_eps_fn(m, S, 0), exact_eps_fn(m, S)
    x = ddim_sample(classifier_free_eps_fn(c, u, 3.0), z, S, 10, progress=False)
    assert out["constant", 3.0]["agreement"] == class_agreement(x, 0, m)
    d = distance_to_exact(x, tilted_draw(m, 0, 3.0), seed=4)["ratio"]
    assert out["constant", 3.0]["tilted"] == pytest.approx(d)
    ramp = per_level_cfg_eps_fn(c, u, ramped_gamma(3.0, S.T))
    x = ddim_sample(ramp, z, S, 10, progress=False)
    assert out["rising", 3.0]["spread"] == spread(x, ref)
    along = (x @ (m.means[0] / m.means[0].norm())).mean().item()
    assert out["rising", 3.0]["along"] == pytest.approx(along)
    fall = per_level_cfg_eps_fn(c, u, ramped_gamma(3.0, S.T, rising=False))
    x = ddim_sample(fall, z, S, 10, progress=False)
    assert out["falling", 3.0]["spread"] == spread(x, ref)
    d = distance_to_exact(x, mixture_draw(m, 0), seed=4)["ratio"]
    assert out["falling", 3.0]["pxy"] == pytest.approx(d)
    # at gamma = 1 every schedule is the conditional sampler
    assert out["rising", 1.0] == out["constant", 1.0] == out["falling", 1.0]
    with pytest.raises(ValueError, match="gammas"):
        claims.scale_schedules(m, S, 0, [0.5], z, 10, ref)
    with pytest.raises(ValueError, match="y"):
        claims.scale_schedules(m, S, 3, [2.0], z, 10, ref)
    with pytest.raises(ValueError, match="seed"):
        claims.scale_schedules(m, S, 0, [2.0], z, 10, ref, seed=-1)
    with pytest.raises(TypeError, match="noise"):
        claims.scale_schedules(m, S, 0, [2.0], z.long(), 10, ref)


def test_claims_refuse_no_values_and_nan_images():
    """tilt_and_noise_formula_error with no alpha_bar failed inside torch's max();
    variant_formula_gaps failed inside torch's quantile() for no image and returned NaN gaps for a
    NaN pixel, silently."""
    with pytest.raises(ValueError, match="^alpha_bars must hold at least one value"):
        claims.tilt_and_noise_formula_error(0.25, 1.0, 2.0, 1.0, [])
    from diffcourse.schedules import linear_schedule

    good, weak = _small_unets(300)
    x0, y = torch.zeros(2, 1, 8, 8), torch.arange(2)
    with pytest.raises(ValueError, match="^x0 must hold at least one sample"):
        claims.variant_formula_gaps(good, weak, x0[:0], y[:0], linear_schedule(300), 10, 3.0)
    x0[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match="^x0 holds NaN"):
        claims.variant_formula_gaps(good, weak, x0, y, linear_schedule(300), 10, 3.0)


def test_ddpm_against_ddim_refuses_no_samples_and_a_missing_entry():
    """kept = {} returned {}, silently; a mixture without one of the two samplers' samples, or
    without its n in sizes, failed with a bare KeyError."""
    rows = [
        {"mixture": "m", "rule": r, "seed": s, "to_tilted": 1.0}
        for r in ("eq. 170, DDIM", "eq. 170, DDPM")
        for s in (0, 1)
    ]
    x = torch.zeros(40, 2)
    both = {"eq. 170, DDIM": x, "eq. 170, DDPM": x}
    with pytest.raises(ValueError, match="^kept must hold at least one"):
        claims.ddpm_against_ddim(rows, {}, {})
    with pytest.raises(ValueError, match=r"^kept\['m'\] must hold the samples"):
        claims.ddpm_against_ddim(rows, {"m": {"eq. 170, DDIM": x}}, {"m": 20})
    with pytest.raises(ValueError, match="^sizes must give n .* lacks 'm'"):
        claims.ddpm_against_ddim(rows, {"m": both}, {})
