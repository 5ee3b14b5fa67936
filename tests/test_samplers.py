from functools import partial

import pytest
import torch
from conftest import random_mixture

from diffcourse.mixture import exact_eps_fn
from diffcourse.samplers import (
    ddim_sample,
    ddpm_sample,
    ddpm_step,
    langevin_sample,
    langevin_step,
    pc_sample,
)
from diffcourse.schedules import cosine_schedule, posterior_mean, posterior_variance
from diffcourse.targets import eps_to_x0


def test_step_mean_is_the_posterior_mean():
    """(x_t - beta/sqrt(1-alpha_bar) eps)/sqrt(alpha) = mu_q(x_t, x0_hat) of q(x_{t-1}|x_t, x0)."""
    s = cosine_schedule(50)
    x_t, eps = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = 20
    ab, ab_prev, beta = (float(v) for v in (s.alpha_bar[t], s.alpha_bar[t - 1], s.betas[t]))
    x0 = eps_to_x0(x_t, eps, ab)
    mu_q = ((1 - beta) ** 0.5 * (1 - ab_prev) * x_t + ab_prev**0.5 * beta * x0) / (1 - ab)
    assert torch.allclose(ddpm_step(x_t, eps, t, s, None), mu_q)
    assert torch.allclose(posterior_mean(x_t, x0, t, s), mu_q)  # eq. 93, the package's
    var = beta * (1 - ab_prev) / (1 - ab)
    assert math.isclose(posterior_variance(t, s), var)  # eq. 85
    z = torch.randn(5, 2, dtype=torch.float64)
    assert torch.allclose(ddpm_step(x_t, eps, t, s, z) - mu_q, var**0.5 * z)


def _assert_gaussian_moments(x, mix, cov_atol):
    """x has the mean (within 5 standard errors) and covariance of the one-component mixture."""
    se = (torch.diagonal(mix.covs[0]) / x.shape[0]).sqrt()
    assert ((x.mean(0) - mix.means[0]).abs() < 5 * se).all()
    assert torch.allclose(torch.cov(x.T), mix.covs[0], rtol=0, atol=cov_atol)


def test_exact_sampler_reaches_a_gaussian_target():
    """With the exact noise prediction and a long chain, the samples have the target's moments.

    (Short chains shrink the variance: the step's variance is the posterior's for a known x0, and
    leaves out the uncertainty about x0; at T = 100 the shrinkage here is about 5%.)"""
    mix = random_mixture(2, (1,), seed=3)
    s = cosine_schedule(1000)
    n = 40000
    x = ddpm_sample(
        exact_eps_fn(mix, s),
        torch.randn(n, 2, dtype=torch.float64),
        s,
        generator=torch.Generator().manual_seed(0),
        progress=False,
    )
    _assert_gaussian_moments(x, mix, cov_atol=0.015)


def test_seeded_and_paired():
    s = cosine_schedule(20)
    fn = lambda x, t: 0.1 * x
    a = ddpm_sample(fn, (50, 2), s, generator=torch.Generator().manual_seed(1), progress=False)
    b = ddpm_sample(fn, (50, 2), s, generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(a, b)
    noise = torch.randn(50, 2)
    c = ddpm_sample(fn, noise, s, generator=torch.Generator().manual_seed(2), progress=False)
    d = ddpm_sample(
        fn, noise.clone(), s, generator=torch.Generator().manual_seed(2), progress=False
    )
    assert torch.equal(c, d)


def test_bad_input():
    s = cosine_schedule(10)
    with pytest.raises(ValueError, match="shape"):
        ddpm_sample(lambda x, t: x, (0, 2), s, progress=False)
    with pytest.raises(ValueError, match="eps_fn"):
        ddpm_sample(lambda x, t: x[:, :1], (4, 2), s, progress=False)
    with pytest.raises(TypeError, match="noise"):
        ddpm_sample(lambda x, t: x, torch.zeros(4, 2, dtype=torch.long), s, progress=False)


# ---- predictor-corrector ---------------------------------------------------------------------------


def test_langevin_step_samples_a_fixed_gaussian():
    """Iterated at a fixed score, the corrector's chain reaches the law (to its O(step) bias)."""
    gen = torch.Generator().manual_seed(0)
    m, sd = (
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        torch.tensor([0.5, 0.8], dtype=torch.float64),
    )
    x = torch.randn(20000, 2, dtype=torch.float64, generator=gen) * 3
    for _ in range(1500):
        score = -(x - m) / sd**2
        x = langevin_step(x, score, 1.0, 0.1, torch.randn(x.shape, dtype=x.dtype, generator=gen))
    assert torch.allclose(x.mean(0), m, atol=0.05)
    assert torch.allclose(x.std(0), sd, rtol=0.05)


def test_langevin_step_size_by_hand():
    """One step at alpha = 0.9, snr = 0.2: delta = 2 alpha (snr mean|z| / mean|score|)^2, the row
    norms averaged first: mean|score| = (5 + 1) / 2 = 3, mean|z| = (1 + 2) / 2 = 1.5, so delta =
    2 * 0.9 * (0.2 * 1.5 / 3)^2 = 0.018 (Song et al. 2021, Algorithm 5)."""
    x = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    score = torch.tensor([[3.0, 4.0], [0.0, 1.0]], dtype=torch.float64)
    z = torch.tensor([[1.0, 0.0], [0.0, -2.0]], dtype=torch.float64)
    expected = x + 0.018 * score + 0.036**0.5 * z
    torch.testing.assert_close(langevin_step(x, score, 0.9, 0.2, z), expected, rtol=1e-12, atol=0)


def test_corrector_repairs_a_short_chain():
    """At T = 50 plain DDPM shrinks a Gaussian's variance; Langevin correction at each level undoes
    most of it."""
    mix = random_mixture(2, (1,), seed=3)
    s = cosine_schedule(50)
    noise = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    target = torch.diagonal(mix.covs[0]).sum()
    plain = ddpm_sample(
        exact_eps_fn(mix, s), noise, s, generator=torch.Generator().manual_seed(1), progress=False
    )
    pc = pc_sample(
        exact_eps_fn(mix, s),
        noise,
        s,
        corrector_steps=3,
        snr=0.1,
        generator=torch.Generator().manual_seed(1),
        progress=False,
    )
    err_plain = abs(torch.cov(plain.T).trace() / target - 1)
    err_pc = abs(torch.cov(pc.T).trace() / target - 1)
    assert err_pc < 0.5 * err_plain, (err_plain, err_pc)


def test_pc_bad_input():
    s = cosine_schedule(10)
    with pytest.raises(ValueError, match="corrector_steps"):
        pc_sample(lambda x, t: x, (4, 2), s, corrector_steps=-1)
    with pytest.raises(ValueError, match="snr"):
        pc_sample(lambda x, t: x, (4, 2), s, snr=0.0)


def test_annealed_langevin_reaches_a_gaussian_target():
    """Langevin steps alone, level after level with no predictor between them, carry N(0, I) down
    the chain to the data law, to the corrector's excess width 1 + alpha r^2 (chapter 6: 2.6% at
    r = 0.16). They need many steps per level: with one, the samples lag far behind the levels."""
    mix = random_mixture(2, (1,), seed=3)
    s = cosine_schedule(50)
    noise = torch.randn(20000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    runs = {
        k: langevin_sample(
            exact_eps_fn(mix, s),
            noise,
            s,
            steps_per_level=k,
            snr=0.16,
            generator=torch.Generator().manual_seed(1),
            progress=False,
        )
        for k in (1, 20)
    }
    _assert_gaussian_moments(runs[20], mix, cov_atol=0.03)
    assert (runs[1].mean(0) - mix.means[0]).abs().max() > 0.3  # 50 steps in all: far too few


def test_langevin_sample_bad_input():
    s = cosine_schedule(10)
    with pytest.raises(ValueError, match="^steps_per_level"):
        langevin_sample(lambda x, t: x, (4, 2), s, steps_per_level=0)
    with pytest.raises(TypeError, match="^steps_per_level"):
        langevin_sample(lambda x, t: x, (4, 2), s, steps_per_level=2.0)
    with pytest.raises(ValueError, match="^snr"):
        langevin_sample(lambda x, t: x, (4, 2), s, snr=-0.1)
    with pytest.raises(TypeError, match="pair"):
        langevin_sample(lambda x, t: (x, x), (4, 2), s, progress=False)


# ---- DDIM --------------------------------------------------------------------------------------------


def _ddpm_by_hand(eps_fn, shape_or_noise, schedule, generator, progress):
    """Ho et al.'s Algorithm 2 as a loop of ddpm_step, one z from the generator per step but the
    last (which adds no noise), in the sampler's order."""
    x = shape_or_noise
    for step in range(schedule.T - 1, -1, -1):
        eps = eps_fn(x, torch.full((x.shape[0],), step, dtype=torch.long))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if step else None
        x = ddpm_step(x, eps, step, schedule, z)
    return x


@pytest.mark.parametrize("name", ["a loop of ddpm_step", "ddim_sample with eta = 1 on every level"])
def test_samplers_that_reduce_to_ddpm(name):
    """DDPM is its one-step rule looped draw for draw (pc_sample without corrector is the same
    code, so it pins nothing); DDIM with eta = 1 on all levels is DDPM step for step (to
    rounding)."""
    mix = random_mixture(2, (2, 1), seed=4)
    s = cosine_schedule(40)
    noise = torch.randn(200, 2, dtype=torch.float64)
    other = {
        "a loop of ddpm_step": _ddpm_by_hand,
        "ddim_sample with eta = 1 on every level": lambda **kw: ddim_sample(eta=1.0, **kw),
    }[name]
    a = ddpm_sample(
        exact_eps_fn(mix, s), noise, s, generator=torch.Generator().manual_seed(3), progress=False
    )
    b = other(
        eps_fn=exact_eps_fn(mix, s),
        shape_or_noise=noise,
        schedule=s,
        generator=torch.Generator().manual_seed(3),
        progress=False,
    )
    assert torch.allclose(a, b, rtol=0, atol=1e-9)
    if name.startswith("a loop"):
        assert torch.equal(a, b)


def test_deterministic_ddim_reaches_a_gaussian_target_in_few_steps():
    """eta = 0 follows the probability-flow ODE: 50 levels give the target's moments."""
    mix = random_mixture(2, (1,), seed=3)
    s = cosine_schedule(1000)
    n = 40000
    x = ddim_sample(
        exact_eps_fn(mix, s),
        torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        s,
        steps=50,
        progress=False,
    )
    _assert_gaussian_moments(x, mix, cov_atol=0.03)
    again = ddim_sample(
        exact_eps_fn(mix, s),
        torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)),
        s,
        steps=50,
        progress=False,
    )
    assert torch.equal(x, again)  # no randomness beyond x_T


def test_ddim_bad_input():
    s = cosine_schedule(10)
    with pytest.raises(ValueError, match="steps"):
        ddim_sample(lambda x, t: x, (4, 2), s, steps=11)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample(lambda x, t: x, (4, 2), s, eta=-0.1)


# ---- eps_fn returning a pair (eps_for_x0, eps_for_direction): DDIM only ----------------------------


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_pair_of_one_prediction_is_plain_ddim(eta):
    mix = random_mixture(2, (2, 1), seed=4)
    s = cosine_schedule(40)
    fn = exact_eps_fn(mix, s)
    noise = torch.randn(100, 2, dtype=torch.float64)
    plain = ddim_sample(
        fn, noise, s, steps=8, eta=eta, generator=torch.Generator().manual_seed(2), progress=False
    )
    paired = ddim_sample(
        lambda x, t: (fn(x, t), fn(x, t)),
        noise,
        s,
        steps=8,
        eta=eta,
        generator=torch.Generator().manual_seed(2),
        progress=False,
    )
    assert torch.equal(plain, paired)


def test_ddim_pair_splits_x0_and_direction():
    """One DDIM step from t to s by hand: x0_hat from the first, the direction from the second."""
    s = cosine_schedule(10)
    x = torch.randn(3, 2, dtype=torch.float64)
    e0, e1 = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    out = ddim_sample(
        lambda x_t, t: (e0, e1) if int(t[0]) == 9 else (torch.zeros_like(x_t),) * 2,
        x,
        s,
        steps=2,
        progress=False,
    )
    a_t, a_s = float(s.alpha_bar[9]), float(s.alpha_bar[0])
    x_s = a_s**0.5 * eps_to_x0(x, e0, a_t) + (1 - a_s) ** 0.5 * e1
    assert torch.allclose(
        out, x_s / a_s**0.5, rtol=1e-12
    )  # the last step, eps = 0: x0 = x_s / sqrt(a_s)


def test_only_ddim_takes_a_pair():
    s = cosine_schedule(10)
    pair = lambda x, t: (x, x)  # noqa: E731
    with pytest.raises(TypeError, match="pair"):
        ddpm_sample(pair, (4, 2), s, progress=False)
    with pytest.raises(TypeError, match="pair"):
        pc_sample(pair, (4, 2), s, corrector_steps=1, progress=False)
    with pytest.raises(TypeError, match="tensor"):
        ddim_sample(lambda x, t: (x, x.tolist()), (4, 2), s, progress=False)
    with pytest.raises(TypeError, match="pair"):
        ddim_sample(lambda x, t: (x, x, x), (4, 2), s, progress=False)
    with pytest.raises(ValueError, match="eps_fn"):
        ddim_sample(lambda x, t: (x, x[:, :1]), (4, 2), s, progress=False)


def test_balanced_labels_and_seeded_noise():
    from diffcourse.samplers import balanced_labels, labels_and_noise, seeded_noise

    assert balanced_labels(3, 2).tolist() == [0, 0, 1, 1, 2, 2]
    a, b = seeded_noise((5, 2), 1), seeded_noise((5, 2), 1)
    assert torch.equal(a, b) and not torch.equal(a, seeded_noise((5, 2), 2))
    assert torch.equal(a, torch.randn(5, 2, generator=torch.Generator().manual_seed(1)))
    y, noise = labels_and_noise(3, 4, (1, 8, 8), seed=7)
    assert y.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and noise.shape == (12, 1, 8, 8)
    assert torch.equal(noise, seeded_noise((12, 1, 8, 8), 7))
    with pytest.raises(ValueError, match="per_class"):
        balanced_labels(3, 0)
    with pytest.raises(TypeError, match="seed"):
        seeded_noise((2, 2), 1.5)


# ---- the callback, and the public steps ---------------------------------------------------------------

from diffcourse.samplers import ddim_step  # noqa: E402
from diffcourse.schedules import ddim_levels  # noqa: E402


@pytest.mark.parametrize("sampler", ["ddpm", "pc", "langevin", "ddim"])
def test_callback_sees_every_level_and_changes_nothing(sampler):
    mix = random_mixture(2, (2, 1), seed=4)
    s = cosine_schedule(30)
    fn = exact_eps_fn(mix, s)
    noise = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    run = {
        "ddpm": lambda **kw: ddpm_sample(fn, noise, s, **kw),
        "pc": lambda **kw: pc_sample(fn, noise, s, corrector_steps=1, **kw),
        "langevin": lambda **kw: langevin_sample(fn, noise, s, steps_per_level=2, **kw),
        "ddim": lambda **kw: ddim_sample(fn, noise, s, steps=7, eta=0.5, **kw),
    }[sampler]
    seen = []
    with_cb = run(
        generator=torch.Generator().manual_seed(1),
        progress=False,
        callback=lambda step, x_t, x0_hat: seen.append((step, x_t.clone(), x0_hat.clone())),
    )
    without = run(generator=torch.Generator().manual_seed(1), progress=False)
    assert torch.equal(with_cb, without)
    levels = ddim_levels(30, 7) if sampler == "ddim" else list(range(29, -1, -1))
    assert [step for step, _, _ in seen] == levels
    assert torch.equal(seen[0][1], noise)  # the first x_t is x_T
    for step, x_t, x0_hat in seen:  # x0_hat is Tweedie's of that step
        t = torch.full((64,), step, dtype=torch.long)
        torch.testing.assert_close(
            x0_hat, eps_to_x0(x_t, fn(x_t, t), float(s.alpha_bar[step])), rtol=1e-9, atol=1e-9
        )
    with pytest.raises(TypeError, match="callback"):
        run(progress=False, callback="print")


def test_ddim_step_is_the_samplers_step():
    mix = random_mixture(2, (2, 1), seed=4)
    s = cosine_schedule(40)
    fn = exact_eps_fn(mix, s)
    noise = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    levels = ddim_levels(40, 6)
    x, gen = noise, torch.Generator().manual_seed(5)
    for i, step in enumerate(levels):
        eps = fn(x, torch.full((50,), step, dtype=torch.long))
        prev = levels[i + 1] if i + 1 < len(levels) else None
        z = torch.randn(x.shape, generator=gen, dtype=x.dtype) if prev is not None else None
        x = ddim_step(x, eps, step, prev, s, eta=0.7, noise=z)
    assert torch.equal(
        x,
        ddim_sample(
            fn,
            noise,
            s,
            steps=6,
            eta=0.7,
            generator=torch.Generator().manual_seed(5),
            progress=False,
        ),
    )
    # eta = 1 between neighbouring levels is the ancestral step
    z, eps = torch.randn_like(noise), torch.randn_like(noise)
    torch.testing.assert_close(
        ddim_step(noise, eps, 20, 19, s, eta=1.0, noise=z), ddpm_step(noise, eps, 20, s, z)
    )
    with pytest.raises(ValueError, match="prev_step"):
        ddim_step(noise, eps, 20, 25, s)
    with pytest.raises(ValueError, match="step"):
        ddim_step(noise, eps, 40, None, s)
    with pytest.raises(ValueError, match="step"):
        ddpm_step(noise, eps, -1, s, None)


def test_ddim_step_at_eta_one_half_by_hand():
    """eta strictly between 0 and 1, where eta^2 for eta (or a missing root) shows: Song et al.'s
    eq. 12 with sigma = eta sqrt((1 - a_s) / (1 - a_t)) sqrt(1 - a_t / a_s) (their eq. 16)."""
    s = cosine_schedule(40)
    g = torch.Generator().manual_seed(3)
    x, eps, z = (torch.randn(5, 2, generator=g, dtype=torch.float64) for _ in range(3))
    a_t, a_s = float(s.alpha_bar[30]), float(s.alpha_bar[10])
    sigma = 0.5 * ((1 - a_s) / (1 - a_t)) ** 0.5 * (1 - a_t / a_s) ** 0.5
    x0_hat = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
    x_s = a_s**0.5 * x0_hat + (1 - a_s - sigma**2) ** 0.5 * eps + sigma * z
    torch.testing.assert_close(ddim_step(x, eps, 30, 10, s, eta=0.5, noise=z), x_s)


# ---- checks once per run; no host-device synchronisation inside the loop ----------------------------------

import contextlib  # noqa: E402

from diffcourse import checks  # noqa: E402
from diffcourse.data import three_blobs  # noqa: E402
from diffcourse.guidance import (  # noqa: E402
    apg_eps_fn,
    batched_cfg_eps_fn,
    cfgpp_eps_fn,
    classifier_free_eps_fn,
    classifier_grad_fn,
    classifier_guided_eps_fn,
    dynamic_threshold_eps_fn,
    interval_cfg_eps_fn,
    rescaled_cfg_eps_fn,
    rescaled_cfg_v_eps_fn,
)
from diffcourse.mixture import exact_cfg_eps_fn  # noqa: E402
from diffcourse.models import MLPClassifier, MLPDenoiser, UNet  # noqa: E402


def _nets(device="cpu"):
    torch.manual_seed(0)
    return (
        MLPDenoiser(dim=2, T=20, hidden=8, depth=2, num_classes=3).to(device),
        MLPDenoiser(dim=2, T=20, hidden=8, depth=2).to(device),
        MLPClassifier(dim=2, T=20, num_classes=3, hidden=8, depth=2).to(device),
    )


def _guided(kind, device="cpu"):
    """An eps_fn of each kind the labs sample with, on 12 rows of three classes."""
    s = cosine_schedule(20)
    cond_net, uncond_net, clf = _nets(device)
    y = torch.arange(3, device=device).repeat_interleave(4)
    cond, uncond = cond_net.eps_fn(y), cond_net.eps_fn(None)
    return {
        "batched CFG": lambda: batched_cfg_eps_fn(cond_net, y, 3.0),
        "two-pass CFG": lambda: classifier_free_eps_fn(cond, uncond, 3.0),
        "classifier guidance": lambda: classifier_guided_eps_fn(
            uncond_net.eps_fn(), classifier_grad_fn(clf, y), s, 2.0
        ),
        "interval": lambda: interval_cfg_eps_fn(cond, uncond, 3.0, 5, 12),
        "rescaled": lambda: rescaled_cfg_eps_fn(cond, uncond, 3.0),
        "rescaled, v": lambda: rescaled_cfg_v_eps_fn(cond, uncond, s, 3.0),
        "APG": lambda: apg_eps_fn(cond, uncond, s, 3.0, eta=0.0, beta=-0.5, r=1.0),
        "dynamic thresholding": lambda: dynamic_threshold_eps_fn(
            batched_cfg_eps_fn(cond_net, y, 5.0), s
        ),
        "CFG++": lambda: cfgpp_eps_fn(cond, uncond, 0.5),
        "exact CFG": lambda: exact_cfg_eps_fn(three_blobs(), s, y, 3.0),
    }[kind]()


KINDS = [
    "batched CFG",
    "two-pass CFG",
    "classifier guidance",
    "interval",
    "rescaled",
    "rescaled, v",
    "APG",
    "dynamic thresholding",
    "CFG++",
    "exact CFG",
]


@contextlib.contextmanager
def _count_host_reads():
    """Counts every Python-level read of a tensor's values (item, tolist, bool, int, float, index)."""
    count = [0]
    saved = {
        name: getattr(torch.Tensor, name)
        for name in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")
    }

    def counting(original):
        def read(self, *args, **kwargs):
            count[0] += 1
            return original(self, *args, **kwargs)

        return read

    for name, original in saved.items():
        setattr(torch.Tensor, name, counting(original))
    try:
        yield count
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


# CFG++ returns a pair of predictions, which only DDIM takes
READ_CASES = [
    (kind, sampler)
    for kind in KINDS
    for sampler in ("ddpm", "pc", "langevin", "ddim")
    if kind != "CFG++" or sampler == "ddim"
]


@pytest.mark.parametrize("kind,sampler", READ_CASES)
def test_no_host_reads_after_the_first_step(kind, sampler):
    """The checks that read tensors run at a run's first call of eps_fn; every later step reads
    nothing back (on a GPU each such read waits for the device)."""
    s = cosine_schedule(20)
    fn = _guided(kind)
    noise = torch.randn(12, 2, generator=torch.Generator().manual_seed(0))
    per_step = []
    run = {
        "ddpm": lambda **kw: ddpm_sample(fn, noise, s, **kw),
        "pc": lambda **kw: pc_sample(fn, noise, s, corrector_steps=1, **kw),
        "langevin": lambda **kw: langevin_sample(fn, noise, s, steps_per_level=2, **kw),
        "ddim": lambda **kw: ddim_sample(fn, noise, s, steps=8, eta=0.5, **kw),
    }[sampler]
    with _count_host_reads() as reads:
        run(
            generator=torch.Generator().manual_seed(1),
            progress=False,
            callback=lambda step, x_t, x0_hat: per_step.append(reads[0]),
        )
    first, later = per_step[0], [b - a for a, b in zip(per_step, per_step[1:])]
    assert first > 0  # the counter sees the first step's checks, so it would see later reads
    assert later == [0] * len(later), (first, later)


def test_value_checks_run_once_per_run_not_per_step():
    cond_net = _nets()[0]
    y = torch.arange(3).repeat_interleave(4)
    fn = batched_cfg_eps_fn(cond_net, y, 3.0)
    counts = []
    for steps in (4, 16):
        calls = []
        original = checks.read_values
        checks.read_values = lambda x, calls=calls, original=original: (
            calls.append(1) or original(x)
        )
        try:
            ddim_sample(fn, torch.randn(12, 2), cosine_schedule(20), steps=steps, progress=False)
        finally:
            checks.read_values = original
        counts.append(len(calls))
    # the starting noise's finiteness before the first step, t's range and y's range at the
    # first call: three reads whatever the number of steps
    assert counts == [3, 3]
    with pytest.raises(
        ValueError, match="t must lie in 0..19"
    ):  # a model built for a shorter chain
        ddim_sample(fn, torch.randn(12, 2), cosine_schedule(30), steps=3, progress=False)


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "exact CFG"])
def test_a_run_on_the_meta_device_reads_nothing(kind):
    """On the meta device tensors hold no values: any read (item, unique, nonzero, a check) raises.
    A whole sampling run there proves that the models, guidance and samplers never read one."""
    fn = _guided(kind, "meta")
    noise = torch.empty(12, 2, device="meta")
    s = cosine_schedule(20)
    out = ddim_sample(fn, noise, s, steps=5, eta=0.5, progress=False)
    if kind != "CFG++":
        out = pc_sample(fn, noise, s, corrector_steps=1, progress=False)
    assert out.device.type == "meta" and out.shape == (12, 2)
    torch.manual_seed(0)
    unet = UNet(size=8, T=20, num_classes=10, width=8).to("meta")
    x = ddim_sample(
        batched_cfg_eps_fn(unet, torch.arange(10, device="meta"), 3.0),
        torch.empty(10, 1, 8, 8, device="meta"),
        s,
        steps=4,
        progress=False,
    )
    assert x.device.type == "meta"


def test_direct_calls_still_check_their_input():
    cond_net = _nets()[0]
    x, y = torch.randn(4, 2), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ValueError, match="t must lie"):
        cond_net(x, torch.full((4,), 25), y)
    with pytest.raises(ValueError, match="y must lie"):
        cond_net(x, torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 5]))
    exact = exact_cfg_eps_fn(three_blobs(), cosine_schedule(20), y, 2.0)
    with pytest.raises(ValueError, match="t must lie"):
        exact(x, torch.full((4,), 20))
    mixed = exact(x, torch.tensor([0, 5, 5, 19]))  # rows at several steps: read from t
    for i, step in enumerate((0, 5, 5, 19)):
        # equal up to rounding: the mixture's batched solve groups its sums by the batch's shape
        torch.testing.assert_close(mixed[i], exact(x, torch.full((4,), step))[i])


# ---- bad input (issue 17) ------------------------------------------------------------------------------
import math  # noqa: E402


def test_sampler_settings_that_mean_nothing_are_named():
    """eta and snr NaN or infinite, a step outside the chain (never Python's negative indexing)."""
    s, fn = cosine_schedule(10), lambda x, t: torch.zeros_like(x)
    for eta in (math.nan, math.inf, -1.0):
        with pytest.raises(ValueError, match="^eta"):
            ddim_sample(fn, (4, 2), s, 5, eta=eta, progress=False)
    for snr in (math.nan, math.inf, 0.0):
        with pytest.raises(ValueError, match="^snr"):
            pc_sample(fn, (4, 2), s, snr=snr, progress=False)
    x = torch.randn(4, 2)
    for step in (-1, 10):
        with pytest.raises(ValueError, match="^step must be an int in"):
            ddpm_step(x, x, step, s, None)


def test_a_zero_score_takes_no_langevin_step():
    """Song et al.'s step 2 alpha (snr |z| / |score|)^2 has no size when the score is zero: the
    corrector leaves x where it is (a clamped norm made it jump by ~1e11), and a whole PC run with
    a zero predictor ends on the scale of plain DDPM's run (which alone grows x by
    1 / sqrt(alpha_bar_0))."""
    gen = torch.Generator().manual_seed(0)
    x, z = torch.randn(4, 2, generator=gen), torch.randn(4, 2, generator=gen)
    assert torch.equal(langevin_step(x, torch.zeros_like(x), 0.9, 0.1, z), x)
    assert torch.equal(langevin_step(x, torch.full_like(x, 1e-30), 0.9, 0.1, z), x)
    moved = langevin_step(x, -x, 0.9, 0.1, z)  # a real score still moves it
    assert not torch.equal(moved, x) and moved.abs().max() < 10
    zero, s = (lambda x_t, t: torch.zeros_like(x_t)), cosine_schedule(20)
    out = pc_sample(zero, (4096, 2), s, generator=gen, progress=False)
    plain = ddpm_sample(zero, (4096, 2), s, generator=gen, progress=False)
    assert torch.isfinite(out).all()
    assert 0.8 < out.std() / plain.std() < 1.25, (out.std(), plain.std())


# ---- ddpm_sample_each: paired runs from the same noise -------------------------------------------
from diffcourse.samplers import ddpm_sample_each  # noqa: E402


def test_ddpm_sample_each_is_seeded_ddpm_per_predictor():
    mix, s = random_mixture(2, (1, 2), seed=2), cosine_schedule(20)
    noise = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    fns = {
        "all": exact_eps_fn(mix, s),
        "class 0": exact_eps_fn(mix, s, 0),
        "again": exact_eps_fn(mix, s),
    }
    got = ddpm_sample_each(fns, noise, s, seed=5, progress=False)
    assert list(got) == ["all", "class 0", "again"]
    expected = ddpm_sample(fns["class 0"], noise, s, torch.Generator().manual_seed(5), False)
    assert torch.equal(got["class 0"], expected)
    assert torch.equal(got["all"], got["again"]) and not torch.equal(got["all"], got["class 0"])
    with pytest.raises(ValueError, match="^eps_fns must hold at least one"):
        ddpm_sample_each({}, noise, s)
    with pytest.raises(TypeError, match="^eps_fns must be a mapping"):
        ddpm_sample_each([], noise, s)
    with pytest.raises(TypeError, match="eps_fns\\['x'\\]"):
        ddpm_sample_each({"x": 1.0}, noise, s)


def test_ddim_gap_is_the_largest_difference_of_two_runs():
    from diffcourse.samplers import ddim_gap

    mix = random_mixture(2, (1, 2), seed=5)
    s = cosine_schedule(30)
    a, b = exact_eps_fn(mix, s, 0), exact_eps_fn(mix, s, 1)
    z = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert ddim_gap(a, a, z, s, 10) == 0.0
    by_hand = ddim_sample(a, z, s, 10, progress=False) - ddim_sample(b, z, s, 10, progress=False)
    assert ddim_gap(a, b, z, s, 10) == by_hand.abs().max().item() > 0.1
    with pytest.raises(TypeError, match="noise"):
        ddim_gap(a, b, z.long(), s, 10)


# ---- chapter 8: sampler_fn and DDIM's x_0 coefficient ---------------------------------------------

from diffcourse.samplers import (  # noqa: E402
    ddim_x0_coefficient,
    ddim_x0_coefficients,
    sampler_fn,
    seeded_noise,
)
from diffcourse.schedules import linear_schedule  # noqa: E402


def test_sampler_fn_is_ddpm_or_ddim_with_the_given_generator():
    s = cosine_schedule(20)
    eps_fn = exact_eps_fn(random_mixture(2, seed=3, dtype=torch.float32), s)
    noise = seeded_noise((64, 2), 0)
    gen = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    ddpm = ddpm_sample(eps_fn, noise, s, generator=gen(), progress=False)
    assert torch.equal(sampler_fn(eps_fn, s)(noise, gen()), ddpm)
    ddim = ddim_sample(eps_fn, noise, s, 7, 1.0, gen(), progress=False)
    assert torch.equal(sampler_fn(eps_fn, s, 7, 1.0)(noise, gen()), ddim)
    assert not torch.equal(ddim, ddpm)
    with pytest.raises(ValueError, match="steps"):
        sampler_fn(eps_fn, s, 0)
    with pytest.raises(TypeError, match="eps_fn"):
        sampler_fn("eps", s)
    with pytest.raises(ValueError, match="eta"):
        sampler_fn(eps_fn, s, 5, -1.0)


def test_ddim_x0_coefficient_against_its_closed_forms():
    # eta = 0, alpha_bar 0.5 -> 0.8: sqrt(0.8) - sqrt(0.2) * sqrt(0.5 / 0.5)
    assert ddim_x0_coefficient(0.5, 0.8, 0.0) == pytest.approx(0.8**0.5 - 0.2**0.5)
    # eta = 1 between neighbouring levels: sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
    s = linear_schedule(100)
    ab, beta = s.alpha_bar.double(), s.betas.double()
    a = ddim_x0_coefficient(ab[1:], ab[:-1], 1.0)
    assert torch.allclose(a, ab[:-1].sqrt() * beta[1:] / (1 - ab[1:]), atol=1e-12)
    # eta = 0.5, alpha_bar 0.5 -> 0.8: xi^2 = 0.25 * (0.2 / 0.5) * (1 - 0.5 / 0.8) = 0.0375
    xi2 = 0.25 * (0.2 / 0.5) * (1 - 0.5 / 0.8)
    assert ddim_x0_coefficient(0.5, 0.8, 0.5) == pytest.approx(0.8**0.5 - (0.2 - xi2) ** 0.5)
    with pytest.raises(ValueError, match="alpha_bar_t"):
        ddim_x0_coefficient(1.0, 1.0, 0.0)
    with pytest.raises(TypeError, match="alpha_bar_s"):
        ddim_x0_coefficient(0.5, "0.8", 0.0)


def test_ddim_x0_coefficients_follow_the_visited_levels():
    s = cosine_schedule(50)
    levels, ab = ddim_levels(50, 6), s.alpha_bar.double()
    out = ddim_x0_coefficients(s, 6, 0.5)
    pairs = zip(levels, levels[1:])
    expected = [ddim_x0_coefficient(ab[t], ab[u], 0.5) for t, u in pairs]
    assert out.shape == (5,) and torch.allclose(out, torch.stack(expected))
    with pytest.raises(ValueError, match="steps"):
        ddim_x0_coefficients(s, 1, 0.0)


# ---- seeded_sample (labs 5 and 6) -------------------------------------------------------------------
from diffcourse.samplers import pc_sample as _pc_sample  # noqa: E402
from diffcourse.samplers import seeded_sample  # noqa: E402


def test_seeded_sample_is_pc_sample_with_a_fresh_seeded_generator():
    from diffcourse.data import three_blobs
    from diffcourse.mixture import exact_eps_fn
    from diffcourse.schedules import cosine_schedule

    s = cosine_schedule(20)
    eps_fn = exact_eps_fn(three_blobs(), s, 1)
    noise = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    for k in (0, 2):
        gen = torch.Generator().manual_seed(7)
        expected = _pc_sample(eps_fn, noise, s, k, 0.2, gen, progress=False)
        got = seeded_sample(eps_fn, noise, s, seed=7, corrector_steps=k, snr=0.2)
        assert torch.equal(got, expected)
    other = seeded_sample(eps_fn, noise, s, seed=8)
    assert not torch.equal(other, seeded_sample(eps_fn, noise, s, seed=7))
    with pytest.raises(TypeError, match="seed"):
        seeded_sample(eps_fn, noise, s, seed=2.5)
    with pytest.raises(TypeError, match="noise"):
        seeded_sample(eps_fn, (50, 2), s)


def test_a_public_steps_tensors_must_match_x_t_not_broadcast():
    """eps [N, 1] against x_t [N, 2] would broadcast into a plausible x_{t-1}; it is refused."""
    s, x = cosine_schedule(10), torch.randn(4, 2)
    thin = torch.randn(4, 1)
    with pytest.raises(
        ValueError, match=r"^x_t \(4, 2\) and eps \(4, 1\) must have the same shape"
    ):
        ddpm_step(x, thin, 5, s, None)
    with pytest.raises(ValueError, match="and noise"):
        ddpm_step(x, x, 5, s, thin)
    for kwargs in ({"noise": thin, "eta": 1.0}, {"eps_direction": thin}):
        with pytest.raises(ValueError, match="must have the same shape"):
            ddim_step(x, x, 5, 2, s, **kwargs)
    with pytest.raises(ValueError, match="and eps"):
        ddim_step(x, thin, 5, 2, s)
    with pytest.raises(ValueError, match="and score"):
        langevin_step(x, thin, 0.9, 0.1, x)
    for name, value in (("alpha", -1.0), ("snr", float("nan"))):
        with pytest.raises(ValueError, match=f"^{name}"):
            langevin_step(x, x, **{"alpha": 0.9, "snr": 0.1, name: value}, noise=x)
    with pytest.raises(ValueError, match="and eps"):
        eps_to_x0(x, thin, 0.5)


def test_ddim_x0_coefficient_refuses_a_step_backwards_or_too_much_noise():
    """Found by fuzzing: alpha_bar_s and alpha_bar_t swapped were taken, and eta = 5 returned a
    complex number."""
    assert 0 < ddim_x0_coefficient(0.5, 0.9, 1.0) < 0.9**0.5
    with pytest.raises(ValueError, match="^alpha_bar_s must exceed alpha_bar_t"):
        ddim_x0_coefficient(0.9, 0.5, 0.0)
    with pytest.raises(ValueError, match="^eta=5.0 makes the step's variance exceed"):
        ddim_x0_coefficient(0.5, 0.9, 5.0)


def test_bad_input_found_by_the_audit():
    """eta past 1 where the direction's variance turns negative; Langevin without its noise."""
    from diffcourse.samplers import ddim_sample, langevin_step

    s = cosine_schedule(50)
    x, eps = torch.zeros(2, 2), torch.ones(2, 2)
    with pytest.raises(ValueError, match="^eta=3"):  # was: the direction term silently dropped
        ddim_step(x, eps, 40, 20, s, eta=3.0, noise=torch.zeros(2, 2))
    with pytest.raises(ValueError, match="^eta=3"):  # refused before the first step
        ddim_sample(lambda x, t: torch.zeros_like(x), (2, 2), s, 10, eta=3.0, progress=False)
    with pytest.raises(TypeError, match="^noise"):
        langevin_step(x, eps, 0.5, 0.1, None)


def test_seeded_noise_and_labels_name_their_bad_arguments():
    from diffcourse.samplers import balanced_labels, seeded_noise

    with pytest.raises(TypeError, match="^shape must be a sequence of ints"):
        seeded_noise(16, 0)
    with pytest.raises(TypeError, match="^dtype must be a floating-point"):
        seeded_noise((2, 2), 0, dtype=torch.long)
    with pytest.raises(ValueError, match="^device must be a device such as"):
        seeded_noise((2, 2), 0, device="gpu")
    with pytest.raises(ValueError, match="^device must be a device such as"):
        balanced_labels(2, 3, device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="^device='cuda', but this machine has no CUDA"):
            seeded_noise((2, 2), 0, device="cuda")


@pytest.mark.parametrize("sampler", ["ddpm", "pc", "langevin", "ddim"])
def test_a_run_whose_predictions_diverge_is_an_error_not_nan_samples(sampler):
    # NaN where the first coordinate is positive: about half the samples end as NaN
    def diverging(x, t):
        return torch.where(x[:, :1] > 0, float("nan"), 0.0) * x

    run = {
        "ddpm": partial(ddpm_sample, diverging, (64, 2), cosine_schedule(10)),
        "pc": partial(pc_sample, diverging, (64, 2), cosine_schedule(10)),
        "langevin": partial(langevin_sample, diverging, (64, 2), cosine_schedule(10)),
        "ddim": partial(ddim_sample, diverging, (64, 2), cosine_schedule(10), steps=5),
    }[sampler]
    with pytest.raises(ValueError, match=r"^eps_fn: .* NaN or infinite values in \d+ of 64"):
        run(generator=torch.Generator().manual_seed(0), progress=False)


def test_the_end_of_run_check_counts_samples_of_any_shape():
    from diffcourse.samplers import finished

    assert finished(torch.zeros(8), "DDIM sampling").shape == (8,)  # one number per sample
    images = torch.zeros(3, 1, 4, 4)
    images[1, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="^v_fn: Euler sampling ended .* in 1 of 3 samples"):
        finished(images, "Euler sampling", "v_fn")
    with pytest.raises(TypeError, match="^x must be a floating-point"):
        finished(torch.zeros(3, dtype=torch.long), "DDIM sampling")


def test_empty_starting_noise_is_refused_and_exact_predictors_answer_no_rows():
    """Noise with a dimension of size 0 reached a reshape inside the first step (a shape with a 0
    was already refused); an exact predictor given no rows answers with no rows."""
    mix, s = random_mixture(2, (1, 1), seed=0), cosine_schedule(10)
    eps_fn = exact_eps_fn(mix, s, 0)
    with pytest.raises(ValueError, match="^shape_or_noise: the starting noise holds no values"):
        ddpm_sample(eps_fn, torch.empty(0, 2, dtype=torch.float64), s, progress=False)
    none = eps_fn(torch.empty(0, 2, dtype=torch.float64), torch.empty(0, dtype=torch.long))
    assert none.shape == (0, 2) and none.dtype == torch.float64


def test_starting_noise_with_a_nan_is_refused_by_name():
    """A NaN in the starting noise came out at the end of the run as eps_fn's divergence ("the
    predictions diverged"), blaming the predictor; it is refused once, before the first step."""
    mix, s = random_mixture(2, (1, 1), seed=0), cosine_schedule(10)
    noise = torch.randn(4, 2, dtype=torch.float64)
    noise[1, 0] = float("nan")
    for sample in (ddpm_sample, ddim_sample):
        with pytest.raises(ValueError, match="^shape_or_noise: the starting noise holds NaN"):
            sample(exact_eps_fn(mix, s, 0), noise, s, progress=False)
