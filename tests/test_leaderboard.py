"""The leaderboard of chapter 12: each metric against a value computed by hand on a small case."""

import pytest
import torch

from diffcourse.data import three_blobs
from diffcourse.leaderboard import (
    References,
    Rule,
    Setting,
    common_robust_pairs,
    evaluate,
    floor_calibration,
    mode_coverage,
    package_rules,
    reference_rules,
    robust_pairs,
    score_samples,
    seed_gaps,
    show,
    summarize,
)
from diffcourse.metrics import sample_distance
from diffcourse.mixture import GaussianMixture, sample_tilted_rejection
from diffcourse.schedules import cosine_schedule, ddim_levels


def two_modes():
    """Class 0 owns two equal components at x = -2 and x = 2 (1-D); class 1 one at x = 6."""
    means = torch.tensor([[-2.0], [2.0], [6.0]], dtype=torch.float64)
    covs = 0.25 * torch.ones(3, 1, 1, dtype=torch.float64)
    return GaussianMixture(
        means, covs, torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64), torch.tensor([0, 0, 1])
    )


def test_nfe_of_every_rule_by_hand():
    s = cosine_schedule(40)
    setting = Setting(three_blobs(), s, 0, 3.0, levels=10)
    ab = s.alpha_bar
    nsr = ((1 - ab) / ab).sqrt()
    inside = sum(1 for t in ddim_levels(40, 10) if 1 / 3 <= nsr[t] <= 3)
    assert 0 < inside < 10 and setting.interval_levels == inside
    want = {
        "conditional, gamma = 1": 10,
        "eq. 170, DDPM": 80,
        "eq. 170, DDIM": 20,
        "predictor-corrector, K = 1": 2 * (40 + 39),
        "interval": 10 + inside,
    }
    got = {r.name: r.nfe(setting) for r in package_rules()}
    for name, value in want.items():
        assert got[name] == value, name
    assert all(
        got[r.name] == 20
        for r in package_rules()
        if r.name.startswith(("APG", "CFG++", "ICG", "feedback", "eq. 170 on velocities"))
    )
    assert got["CFG-Zero*, Euler"] == 2 * (10 - 1)  # the zeroed step evaluates nothing


def test_references_floor_is_the_distance_between_two_further_exact_draws():
    """The floor, recomputed by hand from the same seeded draws: a factor on it would show here."""
    setting = Setting(three_blobs(), cosine_schedule(20), 1, 2.0, levels=5)
    refs = References(setting, 500)
    for target in ("cond", "tilted"):
        draws, floor = refs.get(target, 3)
        gen = torch.Generator().manual_seed(10_003)
        if target == "cond":
            sets = [setting.mixture.sample(500, 1, generator=gen)[0] for _ in range(3)]
        else:
            sets = [
                sample_tilted_rejection(setting.mixture, 1, 2.0, 500, generator=gen)
                for _ in range(3)
            ]
        assert torch.equal(draws, sets[0].double())
        assert floor == sample_distance(sets[1].double(), sets[2].double(), 5, 256, 3)
        assert floor > 0


def test_score_samples_by_hand():
    mix = two_modes()
    setting = Setting(mix, cosine_schedule(20), 0, 1.0, levels=5)
    refs = References(setting, 400)
    draws = refs.get("cond", 0)[0]
    exact = score_samples(draws, refs, 0)
    assert exact["to_cond"] == 0.0  # the reference set itself: no distance at all
    # half the points on class 1's mean, half on class 0's modes: agreement one half
    x = torch.cat([torch.full((200, 1), 6.0), draws[:200]])
    assert score_samples(x, refs, 0)["agreement"] == 0.5
    # shrinking about the mean by 1/2 quarters the covariance's trace
    shrunk = draws.mean(0) + 0.5 * (draws - draws.mean(0))
    assert abs(score_samples(shrunk, refs, 0)["spread"] - 0.25) < 1e-12
    # every point in one of two equal modes: total variation 1/2, coverage 1/2
    assert mode_coverage(torch.full((10, 1), 2.1), mix, 0) == 0.5
    assert mode_coverage(torch.tensor([[-2.0], [2.0]]), mix, 0) == 1.0
    assert mode_coverage(torch.full((3, 1), 0.0), mix, 1) == 1.0  # one component: always 1
    with pytest.raises(ValueError, match="shape"):
        score_samples(draws[:10], refs, 0)
    with pytest.raises(ValueError, match="NaN"):
        score_samples(torch.full((400, 1), float("nan")), refs, 0)


def test_robust_pairs_keep_only_orders_that_hold_on_every_seed():
    rows = []
    values = {"a": [1.0, 1.0, 1.0], "b": [2.0, 0.5, 2.0], "c": [3.0, 3.0, 3.0]}
    for rule, vals in values.items():
        for seed, v in enumerate(vals):
            rows.append({"mixture": "m", "rule": rule, "seed": seed, "to_cond": v, "agreement": v})
    assert sorted(robust_pairs(rows, "to_cond")) == [("a", "c"), ("b", "c")]  # lower is better
    assert sorted(robust_pairs(rows, "agreement")) == [("c", "a"), ("c", "b")]  # higher is better
    with pytest.raises(ValueError, match="metric"):
        robust_pairs(rows, "speed")
    with pytest.raises(ValueError, match="mixture"):
        robust_pairs(rows + [dict(rows[0], mixture="other")], "to_cond")
    summary = summarize(rows, ["to_cond"])
    assert abs(summary[("m", "b")]["to_cond"][0] - 1.5) < 1e-12


def test_evaluate_runs_a_list_of_rules_over_seeds():
    setting = Setting(three_blobs(), cosine_schedule(20), 0, 2.0, levels=5, name="blobs")
    exact = Rule(
        "exact draws",
        lambda s, z, g: s.mixture.sample(z.shape[0], s.y, generator=g)[0],
        lambda s: 0,
    )
    shrink = Rule(
        "shrunk",
        lambda s, z, g: 0.5 * s.mixture.sample(z.shape[0], s.y, generator=g)[0],
        lambda s: 1,
        applies=lambda s: True,
    )
    never = Rule("never", lambda s, z, g: z, lambda s: 0, applies=lambda s: False)
    rows, kept = evaluate([exact, shrink, never], setting, 400, seeds=(0, 1, 2), keep_samples=True)
    assert len(rows) == 6 and {r["rule"] for r in rows} == {"exact draws", "shrunk"}
    assert kept["exact draws"].shape == (1200, 2)
    by = summarize(rows)
    assert 0.6 < by[("blobs", "exact draws")]["to_cond"][0] < 1.6
    assert by[("blobs", "shrunk")]["to_cond"][0] > 3
    assert ("exact draws", "shrunk") in robust_pairs(rows, "to_cond")
    with pytest.raises(ValueError, match="rules must hold at least one Rule"):
        evaluate([], setting, 400)
    with pytest.raises(TypeError, match="rules must be a sequence of Rule"):
        evaluate(exact, setting, 400)
    with pytest.raises(ValueError, match="seeds"):
        evaluate([exact], setting, 400, seeds=(1, 1))


def test_package_rules_run_and_reduce_where_they_should():
    """Every rule samples on a small setting; at gamma = 1 the guided DDIM rules whose change vanishes
    there (eq. 170, interval, CFG++'s matched lambda is < 1 so it is not among them) give the
    conditional samples."""
    setting = Setting(three_blobs(dtype=torch.float64), cosine_schedule(20), 0, 1.0, levels=5)
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    outs = {
        r.name: r.sample(setting, z, torch.Generator().manual_seed(1))
        for r in package_rules()
        if r.applies(setting)
    }
    assert all(torch.isfinite(x).all() and x.shape == (50, 2) for x in outs.values())
    base = outs["conditional, gamma = 1"]
    for name in ("eq. 170, DDIM", "interval", "autoguidance, weak = covariances x 2"):
        assert torch.allclose(outs[name], base, atol=1e-10), name
    # the velocity rules at gamma = 1: Euler on the conditional velocity alone; CFG-Zero*'s scale is
    # neutral there, so it differs from it only by its zeroed first step
    from diffcourse.flow import euler_sample, zero_init_time
    from diffcourse.mixture import exact_velocity_fn

    v_c = exact_velocity_fn(setting.mixture, 0)
    euler = euler_sample(v_c, z, steps=5, progress=False)
    assert torch.allclose(outs["eq. 170 on velocities, Euler"], euler, atol=1e-12)
    t_zero = zero_init_time(5, 1)
    # the first step (t = 1 -> 0.8) zeroed: Euler from the noise at t = 0.8
    late = euler_sample(v_c, z, times=[0.8, 0.6, 0.4, 0.2, 0.0], progress=False)
    assert t_zero > 0.8 and torch.allclose(outs["CFG-Zero*, Euler"], late, atol=1e-12)


def test_interval_and_autoguidance_rules_against_their_formulas_at_gamma_3():
    """At gamma = 3, where the second branch counts: the interval rule is eq. 170 on the levels
    inside chapter 8's interval and the conditional prediction outside it; autoguidance is
    3 eps(y) - 2 eps_weak(y), the weak model being class y with its covariances doubled."""
    from diffcourse.mixture import class_mixture, exact_eps_fn

    mixture, schedule = three_blobs(dtype=torch.float64), cosine_schedule(20)
    s = Setting(mixture, schedule, 0, 3.0, levels=5)
    z = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rules = {r.name: r for r in package_rules()}
    run = lambda name: rules[name].sample(s, z, torch.Generator().manual_seed(1))
    lo, hi = s.interval
    assert 0 < s.interval_levels < s.levels  # some visited levels inside, some outside

    def interval_by_hand(x, t):
        inside = ((t >= lo) & (t <= hi))[:, None]
        return torch.where(inside, 3 * s.cond(x, t) - 2 * s.uncond(x, t), s.cond(x, t))

    interval = run("interval")
    assert torch.allclose(interval, s.ddim(interval_by_hand, z), atol=1e-10)
    for other in (s.ddim(s.cond, z), s.ddim(s.cfg(), z)):  # neither of its two parts alone
        assert (interval - other).abs().max() > 1e-3
    weak_mixture = GaussianMixture(mixture.means, 2 * mixture.covs, mixture.weights, mixture.labels)
    weak = exact_eps_fn(class_mixture(weak_mixture, 0), schedule)
    auto = s.ddim(lambda x, t: 3 * s.cond(x, t) - 2 * weak(x, t), z)
    assert torch.allclose(run("autoguidance, weak = covariances x 2"), auto, atol=1e-10)


def test_setting_bad_input():
    with pytest.raises(TypeError, match="mixture"):
        Setting("blobs", cosine_schedule(20), 0, 2.0)
    with pytest.raises(ValueError, match="gamma"):
        Setting(three_blobs(), cosine_schedule(20), 0, -2.0)
    with pytest.raises(ValueError, match=r"^levels must be an int in \[2, 20\], got 50"):
        Setting(three_blobs(), cosine_schedule(20), 0, 2.0, levels=50)
    for wrong in (10.0, True):  # a wrong type: TypeError, as everywhere
        with pytest.raises(TypeError, match="^levels must be an int"):
            Setting(three_blobs(), cosine_schedule(20), 0, 2.0, levels=wrong)
    with pytest.raises(ValueError, match="^y must lie in"):
        Setting(three_blobs(), cosine_schedule(20), 7, 2.0)
    with pytest.raises(ValueError, match="^n must be an int >= 10"):
        References(Setting(three_blobs(), cosine_schedule(20), 0, 2.0), 3)
    with pytest.raises(TypeError, match="^n must be an int"):  # a wrong type
        References(Setting(three_blobs(), cosine_schedule(20), 0, 2.0), 100.0)


def test_seed_gaps_floor_calibration_and_common_pairs():
    mix = three_blobs()
    gen = torch.Generator().manual_seed(0)
    same_a, same_b = mix.sample(4000, 0, generator=gen)[0], mix.sample(4000, 0, generator=gen)[0]
    gaps = seed_gaps(same_a, same_b, 1000)
    assert len(gaps) == 4 and 0.4 < sum(gaps) / 4 < 1.8  # one law: chance
    assert min(seed_gaps(same_a + 1.0, same_b, 1000)) > 5  # shifted by one: far
    with pytest.raises(ValueError, match="samples"):
        seed_gaps(same_a[:1500], same_b[:1000], 1000)
    with pytest.raises(ValueError, match="seeds of n samples"):  # b's last seed one point short
        seed_gaps(same_a[:2000], same_b[:1999], 1000)
    setting = Setting(mix, cosine_schedule(20), 0, 2.0)
    assert abs(floor_calibration(setting, 2000, seeds=range(30)) - 1) < 0.06
    rows = [
        {"mixture": m, "rule": r, "seed": s, "to_cond": v}
        for m, table_ in (("m1", {"a": 1, "b": 2, "c": 3}), ("m2", {"a": 1, "b": 3, "c": 2}))
        for r, v in table_.items()
        for s in (0, 1)
    ]
    assert common_robust_pairs(rows, "to_cond") == [("a", "b"), ("a", "c")]


def test_show_prints_one_table_per_mixture(capsys):
    setting = Setting(three_blobs(), cosine_schedule(20), 0, 2.0, levels=5, name="blobs")
    rows = evaluate(reference_rules(), setting, 200, seeds=(0, 1))
    board = show(rows)
    assert ("blobs", "exact draws from p(x|y)") in board
    assert "blobs: means over the seeds" in capsys.readouterr().out


def test_side_by_side_puts_every_mixture_in_one_row_per_rule():
    from diffcourse.leaderboard import side_by_side

    stat = lambda v: {m: (v, 0.0) for m in ("to_cond", "to_tilted", "spread", "nfe")}  # noqa: E731
    board = {("m1", "a"): stat(1.0), ("m1", "b"): stat(2.0), ("m2", "a"): stat(3.0)}
    rows, header = side_by_side(board)
    assert header == ["rule", "NFE", "m1: to_tilted", "m1: spread", "m2: to_tilted", "m2: spread"]
    assert rows == [["a", 1.0, 1.0, 1.0, 3.0, 3.0], ["b", 2.0, 2.0, 2.0, None, None]]
    assert side_by_side(board, ["to_cond"])[1] == ["rule", "NFE", "m1: to_cond", "m2: to_cond"]
    with pytest.raises(ValueError, match="metrics"):
        side_by_side(board, ["distance"])
    with pytest.raises(TypeError, match="^board must be a dict"):
        side_by_side([])
    with pytest.raises(ValueError, match="^board must hold at least one"):  # empty: a value
        side_by_side({})
    with pytest.raises(ValueError, match="^metrics must hold at least one"):
        side_by_side(board, [])


def test_evaluate_mixtures_is_evaluate_mixture_after_mixture():
    from diffcourse.leaderboard import evaluate_mixtures

    s = cosine_schedule(20)
    shrink = Rule(
        "shrunk",
        lambda st, z, g: 0.5 * st.mixture.sample(z.shape[0], st.y, generator=g)[0],
        lambda st: 1,
    )
    mixtures = {"blobs": (three_blobs(), 0, 200), "modes": (two_modes(), 1, 100)}
    rows, kept = evaluate_mixtures([shrink], mixtures, s, 2.0, seeds=(0, 1))
    assert [r["mixture"] for r in rows] == ["blobs"] * 2 + ["modes"] * 2
    for name, (m, y, n) in mixtures.items():
        alone, samples = evaluate(
            [shrink], Setting(m, s, y, 2.0, name=name), n, (0, 1), keep_samples=True
        )
        assert [r for r in rows if r["mixture"] == name] == alone
        assert torch.equal(kept[name]["shrunk"], samples["shrunk"])
    with pytest.raises(TypeError, match="mixtures"):
        evaluate_mixtures([shrink], [three_blobs()], s, 2.0)
    with pytest.raises(ValueError, match="mixtures"):
        evaluate_mixtures([shrink], {"blobs": three_blobs()}, s, 2.0)


def test_image_like_rules_run_on_more_than_two_dimensions_only():
    """Rescaling (on eps and on v) and thresholding apply where the data has more than 2 entries;
    at phi = 0 both rescaled rules are eq. 170 with DDIM, at phi = 0.7 they differ from it and
    from each other (the target of the rescaling matters)."""
    from conftest import random_mixture

    mixture, schedule = random_mixture(6, (2, 1), seed=2), cosine_schedule(20)
    s6, s2 = (Setting(m, schedule, 0, 3.0, levels=5) for m in (mixture, three_blobs()))
    z = torch.randn(40, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for phi in (0.0, 0.7):
        rules = {r.name: r for r in package_rules(phi=phi)}
        rescaled = [rules[f"rescaled{on}, phi = {phi:g}"] for on in ("", " on v")]
        assert all(r.applies(s6) and not r.applies(s2) for r in rescaled)
        eps, v = (r.sample(s6, z, torch.Generator().manual_seed(1)) for r in rescaled)
        cfg = rules["eq. 170, DDIM"].sample(s6, z, torch.Generator().manual_seed(1))
        if phi == 0:
            assert torch.allclose(eps, cfg, atol=1e-10) and torch.allclose(v, cfg, atol=1e-10)
        else:
            assert (v - eps).abs().max() > 1e-2 and (v - cfg).abs().max() > 1e-2
    assert "dynamic thresholding" in {r.name for r in package_rules() if r.applies(s6)}


def test_nan_samples_and_nan_rows_are_refused_by_name():
    """seed_gaps named sample_distance's x and ref for a NaN sample, score_samples no parameter;
    summarize returned a NaN mean and robust_pairs dropped every pair of a rule with a NaN row,
    silently."""
    a = torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[3, 1] = float("nan")
    with pytest.raises(ValueError, match="^samples_a holds NaN"):
        seed_gaps(b, a, 20)
    with pytest.raises(ValueError, match="^samples_b holds NaN"):
        seed_gaps(a, b, 20)
    setting = Setting(three_blobs(), cosine_schedule(20), 0, 2.0, levels=5)
    with pytest.raises(ValueError, match="^x holds NaN"):
        score_samples(b, References(setting, 40), 0)
    rows = [
        {"mixture": "m", "rule": r, "seed": s, "to_cond": v}
        for r, values in (("a", (1.0, float("nan"))), ("b", (2.0, 3.0)))
        for s, v in enumerate(values)
    ]
    for call in (
        lambda: summarize(rows, ["to_cond"]),
        lambda: robust_pairs(rows, "to_cond"),
        lambda: common_robust_pairs(rows, "to_cond"),
    ):
        with pytest.raises(ValueError, match=r"^rows\[1\]\['to_cond'\] must not be NaN"):
            call()
