"""One family of checks: a wrong type is a TypeError, a wrong value a ValueError, in every module,
and each message names the parameter at fault."""

import math

import pytest
import torch

from diffcourse import (
    checks,
    claims,
    conditioned,
    data,
    flow,
    layers,
    leaderboard,
    metrics,
    mixture,
    models,
    plots,
    recipes,
    report,
    samplers,
    targets,
    text,
    train,
)
from diffcourse import device as dc_device
from diffcourse.checks import (
    check_bool,
    check_choice,
    check_generator,
    check_int,
    check_ints,
    check_labels,
    check_mapping,
    check_name,
    check_probability,
    check_real,
    check_reals,
    check_same,
    check_sequence,
    check_span,
    check_steps,
    check_strs,
    check_tensor,
    same_device,
)
from diffcourse.conditioned import CaptionUNet, SuperResUNet
from diffcourse.data import checkerboard, load_digits_split, three_blobs, two_moons
from diffcourse.guidance import (
    APGEpsFn,
    apg_eps_fn,
    autoguidance_eps_fn,
    batched_cfg_eps_fn,
    cfgpp_eps_fn,
    classifier_free_eps_fn,
    classifier_free_guidance,
    feedback_eps_fn,
    independent_condition_eps_fn,
    interval_cfg_eps_fn,
    rescaled_cfg,
)
from diffcourse.metrics import class_agreement, frechet_distance, sample_distance, sliced_w2, spread
from diffcourse.mixture import GaussianMixture, grid_sample, tilted_log_prob
from diffcourse.models import ConvClassifier, MLPDenoiser, UNet, VelocityMLP
from diffcourse.plots import JSAnimation
from diffcourse.report import glue, table
from diffcourse.samplers import ddim_sample, ddpm_sample, pc_sample
from diffcourse.schedules import StepTable, cosine_schedule, ddim_levels, linear_schedule, q_sample
from diffcourse.text import TextEncoder
from diffcourse.train import train_denoiser


def test_check_real():
    assert check_real(2, "gamma") == 2.0 and isinstance(check_real(2, "gamma"), float)
    for bad in ("2", None, True, [1.0], torch.tensor(1.0)):
        with pytest.raises(TypeError, match="^gamma must be a real number"):
            check_real(bad, "gamma")
    with pytest.raises(ValueError, match="^gamma must not be NaN"):
        check_real(math.nan, "gamma", finite=False)
    with pytest.raises(ValueError, match="^gamma must be finite"):
        check_real(math.inf, "gamma")
    assert check_real(math.inf, "r", low=0, low_open=True, finite=False) == math.inf
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\], got 1.5"):
        check_real(1.5, "p", low=0, high=1)
    with pytest.raises(ValueError, match=r"^snr must be > 0"):
        check_real(0.0, "snr", low=0, low_open=True)
    with pytest.raises(ValueError, match=r"^lam must be in \[0, 1\)"):
        check_real(1.0, "lam", low=0, high=1, high_open=True)
    assert check_probability(0.5, "p_uncond") == 0.5


def test_check_bool_takes_true_and_false_only():
    assert check_bool(True, "cache") is True and check_bool(False, "cache") is False
    for bad in ("no", "False", 0, 1, None, torch.tensor(True)):  # each truthy or falsy as given
        with pytest.raises(TypeError, match="^cache must be True or False, got"):
            check_bool(bad, "cache")


def test_check_int():
    assert check_int(3, "T", low=1) == 3
    for bad in (3.0, "3", True, None):
        with pytest.raises(TypeError, match="^T must be an int"):
            check_int(bad, "T", low=1)
    with pytest.raises(ValueError, match="^T must be an int >= 1, got 0"):
        check_int(0, "T", low=1)
    with pytest.raises(ValueError, match=r"^steps must be an int in \[1, 5\], got 6"):
        check_int(6, "steps", low=1, high=5)
    assert check_choice("a", "mode", ("a", "b")) == "a"
    with pytest.raises(ValueError, match="^mode must be one of"):
        check_choice("c", "mode", ("a", "b"))
    with pytest.raises(TypeError, match="^mode must be a str, one of"):  # a number for a name
        check_choice(5, "mode", ("a", "b"))


def test_check_tensor_rule_dtype_is_a_type_device_is_a_value():
    x = torch.zeros(3, 2)
    assert (
        check_tensor(
            x, "x", floating=True, shape=(None, 2), dtype=torch.float32, device=torch.device("cpu")
        )
        is x
    )
    with pytest.raises(TypeError, match="^x must be a torch.Tensor"):
        check_tensor([[0.0, 0.0]], "x")
    with pytest.raises(TypeError, match="^x must be a floating-point tensor"):
        check_tensor(x.long(), "x", floating=True)
    with pytest.raises(TypeError, match="^y must be an integer tensor"):
        check_tensor(x, "y", floating=False)
    with pytest.raises(ValueError, match=r"^x must have shape \[N, 3\]"):
        check_tensor(x, "x", shape=(None, 3))
    with pytest.raises(
        TypeError, match="^x has dtype torch.float64, but the mixture is torch.float32"
    ):
        check_tensor(x.double(), "x", dtype=torch.float32, owner="the mixture")
    with pytest.raises(ValueError, match="^x is on cpu, but the model is on meta"):
        check_tensor(x, "x", device=torch.device("meta"))
    assert check_tensor(x, "x", nonempty=True) is x
    table = {"a": 1}
    assert check_mapping(table, "runs", "dict", "run", kind=dict) is table
    with pytest.raises(TypeError, match="^runs must be a dict, got list"):
        check_mapping([1], "runs", "dict", "run", kind=dict)
    with pytest.raises(ValueError, match="^runs must hold at least one run"):
        check_mapping({}, "runs", "dict", "run", kind=dict)
    assert check_sequence(torch.tensor([3, 1]), "times", "ints") == [3, 1]
    assert check_sequence((), "times", "ints", empty=True) == []
    with pytest.raises(TypeError, match="^times must be a sequence of ints, got int"):
        check_sequence(5, "times", "ints")
    with pytest.raises(ValueError, match="^times must hold at least one value"):
        check_sequence([], "times", "ints")
    assert check_name("cfg", "name") == "cfg"
    with pytest.raises(TypeError, match="^name must be a str, got int"):
        check_name(3, "name")
    with pytest.raises(ValueError, match="^name must not be empty"):
        check_name("", "name")
    for empty in (x[:0], torch.tensor(1.0)):  # no samples: none, or no sample axis
        with pytest.raises(ValueError, match="^x must hold at least one sample"):
            check_tensor(empty, "x", nonempty=True)
    with pytest.raises(ValueError, match="shape"):
        check_same(x, torch.zeros(2, 2), "cond", "uncond")
    with pytest.raises(TypeError, match="dtype"):
        check_same(x, x.double(), "cond", "uncond")
    with pytest.raises(ValueError, match="device"):
        check_same(x, x.to("meta"), "cond", "uncond")
    assert same_device(torch.device("cuda"), torch.device("cuda", 0))
    assert not same_device(torch.device("cuda", 1), torch.device("cuda", 0))
    with pytest.raises(TypeError, match="^generator must be a torch.Generator"):
        check_generator(0)


def test_check_steps_and_labels():
    assert torch.equal(check_steps(torch.tensor([0, 4]), 2, 5), torch.tensor([0, 4]))
    with pytest.raises(TypeError, match="^t must be a LongTensor"):
        check_steps(torch.tensor([0.0, 4.0]), 2, 5)
    with pytest.raises(ValueError, match=r"^t must have shape \(3,\)"):
        check_steps(torch.tensor([0, 4]), 3, 5)
    with pytest.raises(ValueError, match=r"^t must lie in 0..4, got values in 0..5"):
        check_steps(torch.tensor([0, 5]), 2, 5)
    with pytest.raises(ValueError, match="^t must lie"):
        check_steps(torch.tensor([-1, 0]), 2, 5)
    # networks: a LongTensor[n]; None is the null label where allowed
    assert torch.equal(
        check_labels(None, 2, 3, torch.device("cpu"), allow_null=True), torch.tensor([3, 3])
    )
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        check_labels(None, 2, 3)
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        check_labels(torch.tensor([0.0, 1.0]), 2, 3)
    with pytest.raises(TypeError, match="^y must be a LongTensor"):
        check_labels(1, 2, 3)
    with pytest.raises(ValueError, match=r"^y must lie in 0..2, got values in 0..3"):
        check_labels(torch.tensor([0, 3]), 2, 3)  # the null label is no class to ask for
    assert torch.equal(
        check_labels(torch.tensor([0, 3]), 2, 3, allow_null=True), torch.tensor([0, 3])
    )
    # mixtures: an int, or an integer tensor of any integer dtype, or 0-dim
    assert torch.equal(check_labels(2, 3, 3, allow_int=True), torch.tensor([2, 2, 2]))
    assert torch.equal(
        check_labels(torch.tensor(1, dtype=torch.int32), 2, 3, allow_int=True), torch.tensor([1, 1])
    )
    with pytest.raises(ValueError, match="^y must lie"):
        check_labels(3, 2, 3, allow_int=True)
    with pytest.raises(TypeError, match="^y must be an int or an integer tensor"):
        check_labels(True, 2, 3, allow_int=True)


# ---- the rule, module by module: (call, exception, the parameter named first) ---------------------

S = cosine_schedule(10)
MIX = three_blobs()
MLP = MLPDenoiser(dim=2, T=10, hidden=8, depth=1, num_classes=3)
X, T0, Y = torch.zeros(4, 2), torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 0])
FN = lambda x, t: x  # noqa: E731
IMG = torch.rand(4, 1, 8, 8)
LFN = lambda x, t, y: x  # noqa: E731 (a network taking labels)
SET = leaderboard.Setting(MIX, cosine_schedule(100), 0, 2.0)
LINE = claims.interval_classes(components=2)  # a 1-D mixture
ROW = {"mixture": "m", "rule": "r", "seed": 0, "to_tilted": 1.0}  # a leaderboard row
VEL, VEL0 = VelocityMLP(hidden=8, depth=1, num_classes=3), VelocityMLP(hidden=8, depth=1)
STU = VelocityMLP(hidden=8, depth=1, num_classes=3, guidance_input=True)
CNN = ConvClassifier(T=None, width=8, features=16)  # a judge of 8 x 8 digits
UNET = UNet(channels=1, size=8, T=10, num_classes=10, width=8)  # class labels, not a condition

GRID = plots.density_grid(MIX, cells=4)  # a 2-D mixture's density on a grid
META = torch.zeros(4, 2, device="meta")  # a tensor on another device than a CPU generator's
LIN = torch.nn.Linear(2, 3)  # a classifier that does not say its C (no num_classes)
LFN_2 = lambda x, t: x[:, :1]  # noqa: E731 (a branch of the wrong shape)
GUIDE = ConvClassifier(T=10, width=8, features=16)  # a noise-aware classifier of 8 x 8 digits
RULES = leaderboard.package_rules()
# a 64-D mixture of ten classes, as chapter 12's digits mixture (8 x 8 images, flattened)
DIGITS = GaussianMixture(
    torch.zeros(10, 64), torch.eye(64).repeat(10, 1, 1), [0.1] * 10, list(range(10))
)
Q, MASK = torch.zeros(2, 3, 4), torch.ones(2, 3, dtype=torch.bool)  # attention: N 2, L 3, D 4

CASES = [
    # schedules
    (lambda: linear_schedule(10.0), TypeError, "T"),
    (lambda: linear_schedule(0), ValueError, "T"),
    (lambda: linear_schedule(10, beta_start="1e-4"), TypeError, "beta_start"),
    (lambda: linear_schedule(10, beta_end=math.nan), ValueError, "beta_end"),
    (lambda: cosine_schedule(10, s=-0.1), ValueError, "s"),
    (lambda: ddim_levels(10, 11), ValueError, "steps"),
    (lambda: ddim_levels(10, 2.0), TypeError, "steps"),
    (lambda: q_sample([0.0], T0, S), TypeError, "x0"),
    (lambda: q_sample(X, T0.float(), S), TypeError, "t"),
    (lambda: q_sample(X, T0 + 10, S), ValueError, "t"),
    (lambda: q_sample(X, T0, "schedule"), TypeError, "schedule"),
    # mixture
    (lambda: MIX.score([[0.0, 0.0]]), TypeError, "x"),
    (lambda: MIX.score(X.double()), TypeError, "x"),
    (lambda: MIX.score(torch.zeros(4, 3)), ValueError, "x"),
    (lambda: MIX.score(X, 1.0), TypeError, "y"),
    (lambda: MIX.score(X, 7), ValueError, "y"),
    (lambda: MIX.sample(2.0), TypeError, "n"),
    (lambda: MIX.sample(-1), ValueError, "n"),
    (lambda: MIX.diffuse(0.0), ValueError, "alpha_bar"),
    (lambda: MIX.diffuse("0.5"), TypeError, "alpha_bar"),
    (lambda: tilted_log_prob(MIX, X, 0, "2"), TypeError, "gamma"),
    (lambda: grid_sample(lambda p: p[:, 0], 10, 1.0, -1.0), ValueError, "high"),
    (lambda: three_blobs(radius=math.nan), ValueError, "radius"),
    (lambda: two_moons(components=2.0), TypeError, "components"),
    (lambda: checkerboard(spacing=0), ValueError, "spacing"),
    (lambda: load_digits_split(holdout=True), TypeError, "holdout"),
    # models
    (lambda: MLPDenoiser(hidden=8.0), TypeError, "hidden"),
    (lambda: MLPDenoiser(emb_dim=7), ValueError, "emb_dim"),
    (lambda: MLPDenoiser(label_pathway="side"), ValueError, "label_pathway"),
    (lambda: MLP("x", T0, Y), TypeError, "x_t"),
    (lambda: MLP(X, T0.float(), Y), TypeError, "t"),
    (lambda: MLP(X, T0 + 10, Y), ValueError, "t"),
    (lambda: MLP(X, T0, Y.float()), TypeError, "y"),
    (lambda: MLP(X, T0, Y + 4), ValueError, "y"),
    (lambda: UNet(width=12), ValueError, "width"),
    (lambda: UNet(mults=2), TypeError, "mults"),
    (lambda: ConvClassifier(num_classes=1.5), TypeError, "num_classes"),
    # guidance
    (lambda: classifier_free_guidance(X, X, None), TypeError, "gamma"),
    (lambda: classifier_free_guidance(X, X, -1.0), ValueError, "gamma"),
    (lambda: classifier_free_eps_fn("cond", FN, 2.0), TypeError, "cond_fn"),
    (lambda: batched_cfg_eps_fn(MLP, Y.float(), 2.0), TypeError, "y"),
    (lambda: batched_cfg_eps_fn("model", Y, 2.0), TypeError, "model"),
    (lambda: rescaled_cfg(X, X, 2.0, phi="0.7"), TypeError, "phi"),
    (lambda: rescaled_cfg(X, X, 2.0, phi=1.5), ValueError, "phi"),
    (lambda: interval_cfg_eps_fn(FN, FN, 2.0, 1.0, 5), TypeError, "t_low"),
    (lambda: cfgpp_eps_fn(FN, FN, 1.5), ValueError, "lam"),
    (lambda: apg_eps_fn(FN, FN, S, 2.0, r=0.0), ValueError, "r"),
    (lambda: apg_eps_fn(FN, FN, "schedule", 2.0), TypeError, "schedule"),
    # samplers
    (lambda: ddpm_sample(FN, (4, 2), "schedule", progress=False), TypeError, "schedule"),
    (lambda: ddpm_sample("eps", (4, 2), S, progress=False), TypeError, "eps_fn"),
    (lambda: ddpm_sample(FN, (4, 2.0), S, progress=False), TypeError, "shape"),
    (lambda: ddpm_sample(FN, (4, 2), S, generator=0, progress=False), TypeError, "generator"),
    (lambda: ddim_sample(FN, (4, 2), S, steps=2.0, progress=False), TypeError, "steps"),
    (lambda: ddim_sample(FN, (4, 2), S, steps=11, progress=False), ValueError, "steps"),
    (lambda: ddim_sample(FN, (4, 2), S, eta=math.nan, progress=False), ValueError, "eta"),
    (
        lambda: pc_sample(FN, (4, 2), S, corrector_steps=1.0, progress=False),
        TypeError,
        "corrector_steps",
    ),
    (lambda: pc_sample(FN, (4, 2), S, snr=math.inf, progress=False), ValueError, "snr"),
    # metrics
    (lambda: sliced_w2(X.tolist(), X), TypeError, "x"),
    (lambda: sample_distance(X, X, repeats=1.0), TypeError, "repeats"),
    (lambda: class_agreement(X.long(), 0, MIX), TypeError, "x"),
    (lambda: spread(X, [[0.0, 0.0]]), TypeError, "reference"),
    (lambda: frechet_distance(X, "b"), TypeError, "b"),
    # found by fuzzing: an AttributeError ("'str' object has no attribute 'dim'") or "'int' object
    # is not iterable" where a mixture, a schedule or a sequence of steps was due
    (lambda: metrics.class_references("mixture", 10), TypeError, "mixture"),
    (lambda: metrics.per_class_agreement(X, Y, "mixture"), TypeError, "mixture"),
    (lambda: metrics.mixture_draw("mixture"), TypeError, "mixture"),
    (lambda: metrics.mixture_draw(MIX, "0"), TypeError, "y"),
    (lambda: metrics.exact_draws("mixture", 0, 10), TypeError, "mixture"),
    (lambda: metrics.relative_score_error(FN, "mixture", S, [0]), TypeError, "mixture"),
    (lambda: metrics.relative_score_error(FN, MIX, S, 3), TypeError, "steps"),
    (lambda: metrics.tweedie_errors(MIX, S, 3), TypeError, "steps"),
    (lambda: metrics.tweedie_errors(MIX, S, torch.tensor(3)), TypeError, "steps"),
    (lambda: metrics.label_gain(MIX, S, 3, progress=False), TypeError, "steps"),
    (lambda: mixture.exact_velocity_fn("mixture"), TypeError, "mixture"),
    (lambda: mixture.exact_velocity_fn(MIX, "0"), TypeError, "y"),
    (lambda: mixture.exact_log_ratio_fn(MIX, "schedule", 0), TypeError, "schedule"),
    (lambda: mixture.exact_log_ratio_fn(MIX, S, 5), ValueError, "y"),
    (lambda: tilted_log_prob("mixture", X, 0, 2.0), TypeError, "mixture"),
    (lambda: claims.cfg_score_gap(MIX, "schedule", 0, [2.0]), TypeError, "schedule"),
    (lambda: claims.cfg_score_gap(MIX, S, 0, [2.0], steps=3), TypeError, "steps"),
    (lambda: claims.confidence_and_entropy("mixture", 0, [2.0], S), TypeError, "mixture"),
    (lambda: claims.samplers("schedule"), TypeError, "schedule"),
    (lambda: plots.forward_process(MIX, S, 3), TypeError, "steps"),
    (lambda: plots.mixture_classes("mixture"), TypeError, "mixture"),
    # found by a second fuzzing pass (chapters 10 to 12): an AttributeError ("'str' object has no
    # attribute 'T'"), a bare torch message, or no error at all where a builder took a non-callable
    (lambda: claims.reduction_gap("8", S, 2.0), TypeError, "d"),
    (lambda: claims.reduction_gap(8, S, -1.0), ValueError, "gamma"),
    (lambda: claims.dimension_sweep(8, S, 2.0), TypeError, "dims"),
    (lambda: claims.dimension_sweep([2], "schedule", 2.0), TypeError, "schedule"),
    (lambda: claims.confidence_and_entropy(MIX, 3, [2.0], S), ValueError, "y"),
    (lambda: claims.confidence_and_entropy(MIX, 0, 2.0, S), TypeError, "gammas"),
    (lambda: claims.edge_and_support(MIX, S, [1.0], [0.0], (1, 2), (0, 2)), ValueError, "mixture"),
    (lambda: claims.edge_and_support(LINE, S, [1.0], [0.0], (2, 1), (0, 2)), ValueError, "far"),
    (lambda: claims.edge_and_support(LINE, S, [1.0], [0.0], (1, 2), 2.0), TypeError, "support"),
    (lambda: claims.noise_to_signal_levels("schedule", 0.1, 1.0), TypeError, "schedule"),
    (lambda: claims.noise_to_signal_levels(S, "0.1", 1.0), TypeError, "low"),
    (lambda: claims.noise_to_signal_levels(S, 2.0, 1.0), ValueError, "low"),
    (lambda: claims.coverage_by_span("mixture", 0, 2.0, S, {}), TypeError, "mixture"),
    (lambda: claims.coverage_by_span(MIX, 0, 2.0, S, [(0, 5)]), TypeError, "spans"),
    (lambda: claims.coverage_by_span(MIX, 0, 2.0, S, {"a": (0, 10)}), ValueError, "spans"),
    (lambda: claims.ratio_of_laws_fn(MIX, "bottom", S), TypeError, "bottom"),
    (lambda: claims.stand_in_error("mixture", S, [1]), TypeError, "mixture"),
    (lambda: claims.stand_in_error(MIX, S, 1), TypeError, "levels"),
    (lambda: claims.learned_icg(MLP, MIX, 0, 2.0, S), TypeError, "model"),
    (lambda: claims.ddpm_against_ddim("rows", {}, {}), TypeError, "rows"),
    (lambda: claims.ddpm_against_ddim([{"mixture": "m"}], {}, {}), ValueError, "rows"),
    (lambda: claims.ddpm_against_ddim([ROW], [], {}), TypeError, "kept"),
    (lambda: claims.is_monotone("321"), TypeError, "values"),
    (lambda: claims.is_monotone([3, "2"]), TypeError, "values"),
    (lambda: flow.matched_time("0.5"), TypeError, "alpha_bar"),
    (lambda: flow.velocity_cfg_fn("cond", FN, 2.0), TypeError, "cond_fn"),
    (lambda: flow.cfg_zero_star_fn(FN, None, 2.0), TypeError, "uncond_fn"),
    (lambda: flow.guided_velocity_target("teacher", X, T0, Y, X[:, 0]), TypeError, "teacher"),
    (lambda: flow.relative_velocity_error(FN, FN, "mixture", [0.5]), TypeError, "mixture"),
    (lambda: flow.relative_velocity_error(FN, FN, MIX, [1.5]), ValueError, "times"),
    (lambda: flow.velocity_gap_to_score(FN, "mixture", 0, X, [0.5]), TypeError, "mixture"),
    (lambda: flow.velocity_gap_to_eps(FN, FN, "schedule", X, [1]), TypeError, "schedule"),
    (lambda: leaderboard.mode_coverage([[0.0, 0.0]], MIX, 0), TypeError, "x"),
    (lambda: leaderboard.mode_coverage(X, "mixture", 0), TypeError, "mixture"),
    (lambda: leaderboard.mode_coverage(torch.zeros(4, 3), MIX, 0), ValueError, "x"),
    (lambda: leaderboard.summarize("rows"), TypeError, "rows"),
    (lambda: leaderboard.summarize([]), ValueError, "rows"),
    (lambda: leaderboard.show([1, 2]), TypeError, "rows"),
    (lambda: leaderboard.robust_pairs([ROW], "to_cond"), ValueError, "rows"),
    (lambda: leaderboard.common_robust_pairs({"a": 1}, "to_tilted"), TypeError, "rows"),
    (lambda: leaderboard.seed_gaps("a", X, 2), TypeError, "samples_a"),
    (lambda: leaderboard.score_samples(X, "refs", 0), TypeError, "refs"),
    (lambda: leaderboard.Rule("name", "sample", lambda s: 1), TypeError, "sample"),
    (lambda: leaderboard.Rule(None, FN, lambda s: 1), TypeError, "name"),
    (lambda: APGEpsFn(FN, FN, "schedule", 2.0, 0.0, math.inf, 0.0), TypeError, "schedule"),
    (lambda: APGEpsFn(FN, FN, S, -2.0, 0.0, math.inf, 0.0), ValueError, "gamma"),
    (lambda: models.flat_eps_fn("model"), TypeError, "model"),
    (lambda: autoguidance_eps_fn(FN, "weak", 2.0), TypeError, "weak_fn"),
    (lambda: metrics.rescale_factors(FN, FN, X, S, "levels", 2.0), TypeError, "levels"),
    (lambda: recipes.cache_key("ch4-denoiser", "cpu"), TypeError, "recipe"),
    (lambda: recipes.cache_key(recipes.get("ch4-denoiser"), "gpu"), ValueError, "device"),
    (lambda: data.round_mixture("means", 0.1, [0]), TypeError, "means"),
    # layers, text encoder and conditioned U-Nets: sizes, then what forward is given
    (lambda: layers.Linear(4.0, 3), TypeError, "in_features"),
    (lambda: layers.Conv2d(1, 3, (3, 0)), ValueError, "kernel_size[1]"),
    (lambda: layers.GroupNorm(3, 4), ValueError, "num_channels"),
    (lambda: layers.LayerNorm(4, eps=-1.0), ValueError, "eps"),
    (lambda: layers.Linear(4, 3)(torch.zeros(2, 5)), ValueError, "x must have 4 features"),
    (lambda: layers.Linear(4, 3)(torch.zeros(2, 4).double()), TypeError, "x has dtype"),
    (lambda: layers.Conv2d(1, 3, 3)(torch.zeros(2, 1, 8)), ValueError, "x must have 4 dim"),
    (lambda: layers.Conv2d(1, 3, 3)(torch.zeros(2, 2, 8, 8)), ValueError, "x must have 1 "),
    (lambda: layers.GroupNorm(2, 4)(torch.zeros(2, 4, 3, 3, device="meta")), ValueError, "x is"),
    (lambda: layers.LayerNorm(4)(torch.zeros(2, 4).long()), TypeError, "x must be a floating"),
    (lambda: TextEncoder(dim=6, heads=4), ValueError, "dim"),
    (lambda: TextEncoder(max_len=0), ValueError, "max_len"),
    (lambda: CaptionUNet(text_layers=-1), ValueError, "text_layers"),
    (lambda: SuperResUNet(size=8.0), TypeError, "size"),
    # containers the package builds, built by hand
    (lambda: StepTable([0.1, 0.2]), TypeError, "values"),
    (lambda: StepTable(torch.ones(2, 2)), ValueError, "values"),
    (lambda: JSAnimation("<div/>", 0), ValueError, "frames"),
    (lambda: metrics.ImageSweep({"a": 1}, {"a": X}), TypeError, "results"),
    (lambda: _recipe(trainer="denoser"), ValueError, "trainer"),
    (lambda: _recipe(model="Foo"), ValueError, "model"),
    (lambda: _recipe(schedule=("linear", 0)), ValueError, "schedule[1]"),
    (lambda: _recipe(lr="1e-3"), TypeError, "lr"),
    # empty where one or more are due: a wrong value; another type: a wrong type
    (lambda: report.glue_all({"a": 1}), ValueError, "patterns"),
    (lambda: report.glue_all({"a": 1}, "x_{}", ""), ValueError, "patterns[1]"),
    (lambda: report.glue_all({"a": 1}, 3), TypeError, "patterns[0]"),
    (lambda: report.glue_key(""), ValueError, "name"),
    (lambda: leaderboard.Rule("", FN, lambda s: 1), ValueError, "name"),
    (lambda: plots.animate_samples({"a": []}, GRID), ValueError, "panels['a']"),
    (lambda: plots.animate_samples({"a": 3}, GRID), TypeError, "panels['a']"),
    (lambda: plots.samples_grid(GRID, {}), ValueError, "rows"),
    (lambda: plots.samples_grid(GRID, {"r": {}}), ValueError, "rows['r']"),
    (lambda: plots.samples_grid(GRID, {"r": [X]}), TypeError, "rows['r']"),
    (lambda: plots.tradeoff({}, "d", "s"), ValueError, "rows"),
    (lambda: plots.tradeoff({"a": 1}, "d", "s"), TypeError, "rows['a']"),
    (lambda: plots.sampled_frames("sample", {"a": FN}), TypeError, "sample"),
    (lambda: plots.curve_panels(5, "x", ["y"]), TypeError, "panels"),
    (lambda: plots.curve_panels([{"a": ([1], [1.0])}], "x", 5), TypeError, "ylabels"),
    (lambda: plots.animate_images({"a": [IMG]}, 2, times=5), TypeError, "times"),
    (lambda: report.table(5), TypeError, "rows"),
    (lambda: report.pivot({("a", 1): (1.0,)}, ["m"], "gamma", label="a"), TypeError, "label"),
    # optional arguments, each alone
    (lambda: data.attribute_grid(dtype=torch.int64), TypeError, "dtype"),
    (lambda: dc_device.synchronize("gpu0"), ValueError, "device"),
    (lambda: dc_device.timer("gpu0").__enter__(), ValueError, "device"),
    (lambda: leaderboard.package_rules(pc_steps=-1), ValueError, "pc_steps"),
    (lambda: leaderboard.package_rules(phi=2.0), ValueError, "phi"),
    (lambda: leaderboard.package_rules(fbg_max_gamma="10"), TypeError, "fbg_max_gamma"),
    (lambda: claims.exact_cfg(MIX, S, 0, 2.0, cond="eps"), TypeError, "cond"),
    (lambda: claims.two_classes(4, dtype=torch.int64), TypeError, "dtype"),
    (lambda: claims.langevin_settled(1.0, 0.9, 0.1, device="gpu0"), ValueError, "device"),
    (lambda: flow.euler_sample(FN, (4, 2), times=[1, "0"]), TypeError, "times"),
    (lambda: flow.heun_sample(FN, (4, 2), times=[1.0, 1.5, 0.0]), ValueError, "times"),
    (lambda: mixture.sample_tilted(MIX, 0, 2.0, 4, generator=0), TypeError, "generator"),
    (lambda: mixture.sample_tilted(MIX, 0, 2.0, 4, margin="6"), TypeError, "margin"),
    (lambda: mixture.sample_tilted_rejection(MIX, 0, 2.0, 4, "gen"), TypeError, "generator"),
    (lambda: samplers.start_noise((4, 2), dtype=torch.int64), TypeError, "dtype"),
    (lambda: claims.reduction_gap(4, S, 2.0, n="256"), TypeError, "n"),
    (lambda: claims.dimension_sweep([2], S, 2.0, mu="0.5"), TypeError, "mu"),
    (lambda: claims.stand_in_error(MIX, S, [0], n=0), ValueError, "n"),
    (lambda: claims.feedback_check(MIX, MIX, 0.3, [0.5], S), ValueError, "caps[0]"),
    (lambda: metrics.agreement_and_spread(X, Y, MIX, {0: "x"}), TypeError, "references[0]"),
    (
        lambda: metrics.chunk_floors(metrics.mixture_draw(MIX), 8, device="gpu0"),
        ValueError,
        "device",
    ),
    (lambda: text.tokenize(["seven"], device="gpu0"), ValueError, "device"),
    (lambda: text.random_captions(torch.tensor([1]), generator=1), TypeError, "generator"),
    (lambda: text.random_captions(torch.tensor([1]), held_out="seven"), TypeError, "held_out"),
    (lambda: plots.line_plot([1], {"a": [1]}, "x", "y", ax="ax"), TypeError, "ax"),
    (lambda: plots.line_plot([1], {"a": [1]}, "x", "y", figsize=(6, -1)), ValueError, "figsize"),
    (lambda: plots.line_plot([1], {"a": [1]}, "x", "y", styles="o-"), TypeError, "styles"),
    (lambda: plots.point_clouds({"a": X}, size="big"), TypeError, "size"),
    (lambda: plots.image_panels({"a": IMG}, 2, row_labels=[1, 2]), TypeError, "row_labels"),
    (
        lambda: plots.tradeoff({"a": {"d": 1, "s": 1}}, "d", "s", note=None, floor="1"),
        TypeError,
        "floor",
    ),
    (lambda: plots.curve_panels([{"a": [(1.0, 0.1)]}], "x", ["y"], logy="0"), TypeError, "logy"),
    (lambda: leaderboard.summarize([ROW], metrics="to_tilted"), TypeError, "metrics"),
    (lambda: leaderboard.robust_pairs([ROW], "to_tilted", "mm"), ValueError, "mixture"),
    (lambda: leaderboard.floor_calibration(SET, 8, seeds="0"), TypeError, "seeds"),
    (lambda: leaderboard.floor_calibration(SET, 8, seeds=[1, 1]), ValueError, "seeds"),
    (lambda: independent_condition_eps_fn(LFN, Y, 2.0, 3, generator=0), TypeError, "generator"),
    # flags: True or False, not a truthy str or an int
    (lambda: ddim_sample(FN, (4, 2), S, progress="no"), TypeError, "progress"),
    (lambda: ddpm_sample(FN, (4, 2), S, progress=0), TypeError, "progress"),
    (lambda: flow.euler_sample(FN, (4, 2), progress="no"), TypeError, "progress"),
    (lambda: flow.cfg_zero_star_fn(FN, FN, 2.0, scale="no"), TypeError, "scale"),
    (lambda: flow.cfg_zero_star(X, X, 2.0, scale=1), TypeError, "scale"),
    (lambda: claims.is_monotone([1, 2], increasing="no"), TypeError, "increasing"),
    (lambda: claims.is_monotone([1, 2], margin="0.1"), TypeError, "margin"),
    (lambda: claims.is_monotone([1, 2], margin=math.nan), ValueError, "margin"),
    (lambda: recipes.names(aliases=1), TypeError, "aliases"),
    (lambda: recipes.trained("ch1-denoiser", cache="off"), TypeError, "cache"),
    (lambda: train_denoiser(MLP, MIX, S, steps=1, progress="no"), TypeError, "progress"),
    (lambda: plots.line_plot([1], {"a": [1]}, "x", "y", "t", logy="yes"), TypeError, "logy"),
    (lambda: table([[1]], show="no"), TypeError, "show"),
    (lambda: glue("a", 1, display=1), TypeError, "display"),
    (lambda: layers.Linear(2, 2, bias="no"), TypeError, "bias"),
    # found by reading the code (2 December): each failed silently or deep inside torch before
    (lambda: flow.train_velocity(VEL, (X, torch.tensor([0, 1, 3, 0])), 1), ValueError, "data: y"),
    (
        lambda: flow.train_student(STU, VEL, (X, torch.tensor([0, 1, 3, 0])), 1),
        ValueError,
        "data: y",
    ),
    (lambda: flow.guided_velocity_target(VEL0, X, X[:, 0], Y, X[:, 0]), ValueError, "teacher"),
    (lambda: flow.guided_velocity_target(VEL, X, X[:, 0], Y.float(), X[:, 0]), TypeError, "y"),
    (lambda: text.satisfied(CNN, IMG * float("nan"), ["seven"] * 4), ValueError, "x"),
    (lambda: text.satisfied(CNN, IMG.tolist(), ["seven"] * 4), TypeError, "x"),
    (lambda: text.caption_references(CNN, [], IMG, T0), ValueError, "captions"),
    (lambda: conditioned.guided_sample(UNET, T0, 2.0, IMG, S, 2), TypeError, "model"),
    (lambda: conditioned.superres_metrics(CNN, IMG, IMG, T0, T0, IMG, T0), ValueError, "low"),
    (lambda: plots.class_panels({"a": (X, Y + 1)}, 3), ValueError, "panels['a'] y"),
    (lambda: leaderboard.mode_coverage(X[:0], MIX, 0), ValueError, "x"),
    (lambda: leaderboard.mode_coverage(X * float("nan"), MIX, 0), ValueError, "x"),
    # training
    (lambda: train_denoiser(MLP, MIX, S, steps=1.5), TypeError, "steps"),
    (lambda: train_denoiser(MLP, MIX, S, steps=0), ValueError, "steps"),
    (lambda: train_denoiser(MLP, MIX, S, steps=1, p_uncond=2.0), ValueError, "p_uncond"),
    (lambda: train_denoiser("model", MIX, S, steps=1), TypeError, "model"),
    (lambda: train_denoiser(MLP, MIX, "schedule", steps=1), TypeError, "schedule"),
    # found by review: each of these failed inside torch, or not at all
    (lambda: check_generator(torch.Generator(), device="meta"), ValueError, "generator"),
    (lambda: ddpm_sample(FN, META, S, torch.Generator(), progress=False), ValueError, "generator"),
    (
        lambda: pc_sample(FN, META, S, generator=torch.Generator(), progress=False),
        ValueError,
        "generator",
    ),
    (
        lambda: ddim_sample(FN, META, S, eta=1.0, generator=torch.Generator(), progress=False),
        ValueError,
        "generator",
    ),
    (
        lambda: q_sample(META, T0.to("meta"), S, generator=torch.Generator()),
        ValueError,
        "generator",
    ),
    (lambda: targets.posterior_means(X, META, 0.5), ValueError, "pool"),
    (lambda: train.Draws(torch.Generator(), 4, "cpu").draw((), "gauss"), ValueError, "kind"),
    (lambda: train.Draws(torch.Generator(), 4, "cpu").draw((), "int"), ValueError, "high"),
    (lambda: train.Draws(torch.Generator(), 0, "cpu"), ValueError, "batch_size"),
    (lambda: train.Draws(torch.Generator(), 4, "cpu", rank=1), ValueError, "rank"),
    (lambda: train.Draws(torch.Generator(), 4, "meta"), ValueError, "generator"),
    (lambda: train.classifier_loss(LIN, X, Y + 1), ValueError, "y"),
    (lambda: train.classifier_loss(LIN, X, Y - 100), ValueError, "y"),
    (lambda: train.fit(MLP, MIX, "loss", None), TypeError, "loss"),
    (lambda: train.fit(MLP, MIX, LFN, {"seed": 0}), TypeError, "settings"),
    (lambda: feedback_eps_fn(FN, FN, lambda x, t: torch.zeros(1), 0.5)(X, T0), ValueError, "log_"),
    (lambda: feedback_eps_fn(FN, LFN_2, lambda x, t: T0.float(), 0.5)(X, T0), ValueError, "cond"),
    (lambda: metrics.noisy_accuracy(GUIDE, IMG, T0, S, 3), TypeError, "steps"),
    (lambda: metrics.noisy_accuracy(GUIDE, IMG, T0, S, []), ValueError, "steps"),
    (lambda: metrics.guidance_sweep({"a": FN}, 2.0, FN, Y, MIX), TypeError, "gammas"),
    (lambda: metrics.guidance_sweep({"a": FN}, [-1.0], FN, Y, MIX), ValueError, "gammas[0]"),
    (lambda: metrics.guidance_sweep({"a": FN}, {"a": []}, FN, Y, MIX), ValueError, "gammas['a']"),
    (lambda: metrics.guided_eps_errors({"m": MLP}, MIX, S, [], [1]), ValueError, "gammas"),
    (lambda: models.timestep_embedding(torch.zeros(4, 1), 4, 10), ValueError, "t"),
    (lambda: models.flat_eps_fn(UNET)(torch.zeros(2, 65), T0[:2]), ValueError, "x_t"),
    (lambda: claims.additive_world(MIX, "p", 0.5), TypeError, "unconditional"),
    (lambda: claims.additive_world(MIX, LINE, 0.5), ValueError, "sharp and unconditional"),
    (lambda: text.masked_attention(Q, Q, Q, MASK, 0), ValueError, "heads"),
    (lambda: text.masked_attention(Q, Q, Q, MASK, 3), ValueError, "heads"),
    (lambda: text.masked_attention(Q, Q, Q, MASK[:, :2], 2), ValueError, "mask"),
    (lambda: text.masked_attention(Q[0], Q, Q, MASK, 2), ValueError, "q"),
    (lambda: text.CrossAttention(8, 0), ValueError, "context_dim"),
    (lambda: text.CrossAttention(8, 2.0), TypeError, "context_dim"),
    (lambda: leaderboard.evaluate(leaderboard.package_rules(), MIX, 10), TypeError, "setting"),
    (lambda: leaderboard.References(MIX, 10), TypeError, "setting"),
    # checks no test reached before
    (
        lambda: leaderboard.evaluate(RULES, SET, 10, refs=leaderboard.References(SET, 12)),
        ValueError,
        "refs",
    ),
    (lambda: leaderboard.References(SET, 10).get("tilt", 0), ValueError, "target"),
    (lambda: sample_distance(X, X, repeats=3), ValueError, "repeats"),
    (lambda: metrics.ImageSweep({"a": 1.0}, {}), TypeError, "results"),
    (lambda: metrics.ImageSweep({}, {"a": IMG}), ValueError, "first"),
    (lambda: S.to("gpu"), ValueError, "device"),
    (lambda: S.to(dtype=torch.long), TypeError, "dtype"),
    (lambda: MIX.to("gpu"), ValueError, "device"),
    (lambda: MIX.to(dtype=torch.int32), TypeError, "dtype"),
    # named by their helpers before ("shape", "steps", or an AttributeError on a str's split):
    # each refused under its own name, before any sampling or scoring
    (lambda: claims.edge_and_support(LINE, S, [1.0], [0.0], (1, 2), (0, 2), n=0), ValueError, "n"),
    (lambda: claims.learned_icg(UNET, DIGITS, 0, 2.0, S, n=0), ValueError, "n"),
    (lambda: claims.learned_icg(UNET, DIGITS, 0, 2.0, S, levels=11), ValueError, "levels"),
    (lambda: metrics.image_metrics(CNN, IMG, T0, "ref", T0), TypeError, "ref_x"),
    (lambda: metrics.image_metrics(CNN, IMG, T0, IMG, T0[:2]), ValueError, "ref_y"),
    (lambda: metrics.image_metrics(LIN, IMG, T0, IMG, T0), TypeError, "classifier"),
    (lambda: metrics.frechet_floor(LIN, IMG, IMG, 2), TypeError, "judge"),
    (lambda: metrics.feature_traces(LIN, IMG, T0), TypeError, "judge"),
    (lambda: metrics.image_metrics_over_seeds(CNN, FN, T0, "ref", T0), TypeError, "ref_x"),
    (lambda: metrics.image_metrics_over_seeds(LIN, _never, T0, IMG, T0), TypeError, "classifier"),
    (
        lambda: metrics.image_metrics_over_seeds(CNN, FN, T0, IMG, T0, shape=(1, 0)),
        ValueError,
        "shape",
    ),
]


def _never(noise, generator):
    raise AssertionError("sampled before its arguments were checked")


def _recipe(**changes):
    """Chapter 4's recipe with ``changes`` to its fields, as a reader might build one by hand."""
    import dataclasses

    return dataclasses.replace(recipes.get("ch4-denoiser"), **changes)


@pytest.mark.parametrize("call,error,name", CASES, ids=[f"{i}-{c[2]}" for i, c in enumerate(CASES)])
def test_every_module_follows_the_rule(call, error, name):
    with pytest.raises(error) as info:
        call()
    assert type(info.value) is error
    assert str(info.value).startswith(name), str(info.value)


# every argument that is a table (name -> thing): a list is a wrong type, an empty table a
# wrong value, whichever function is called (checks.check_mapping)
MAPPINGS = [
    ("spans", lambda m: claims.coverage_by_span(MIX, 0, 2.0, S, m)),
    ("mixtures", lambda m: leaderboard.evaluate_mixtures(leaderboard.package_rules(), m, S, 2.0)),
    ("board", lambda m: leaderboard.side_by_side(m)),
    ("samples", lambda m: metrics.distances_to_exact(m, metrics.mixture_draw(MIX))),
    ("samples", lambda m: metrics.sample_set_metrics(m, MIX, 0, X, {})),
    ("eps_fns", lambda m: metrics.ddim_image_metrics(CNN, m, S, 5, Y, IMG, Y)),
    ("samplers", lambda m: metrics.image_sweep(CNN, m, Y, IMG, Y)),
    ("models", lambda m: metrics.branch_errors(m, MIX, S, [1])),
    ("windows", lambda m: metrics.window_means(torch.zeros(3), torch.zeros(3), m)),
    ("builders", lambda m: metrics.guidance_sweep(m, [1.0], FN, Y, MIX)),
    ("models", lambda m: metrics.guided_eps_errors(m, MIX, S, [1.0], [1])),
    ("grad_fors", lambda m: metrics.relative_grad_errors(m, MIX, S, [1])),
    ("eps_fns", lambda m: samplers.ddpm_sample_each(m, X, S)),
    ("panels", lambda m: plots.animate_samples(m, plots.density_grid(MIX, cells=4))),
    ("panels", lambda m: plots.animate_images(m, 2)),
    ("curves", lambda m: plots.line_plot([1], m, "x", "y")),
    ("panels", lambda m: plots.point_clouds(m)),
    ("panels", lambda m: plots.class_panels(m, 3)),
    ("panels", lambda m: plots.image_panels(m, 2)),
    ("panels", lambda m: plots.class_grids(m, 2)),
    ("mixture", lambda m: plots.levels_sweep(m, {}, {}, 0.7)),
    ("values", lambda m: plots.sweep_grid(plots.density_grid(MIX, cells=4), {}, m, ("a", "b"))),
    ("eps_fns", lambda m: plots.sampled_frames(FN, m)),
    ("runs", lambda m: recipes.summary(m)),
    ("values", lambda m: report.pivot(m, ["a"], "gamma")),
]


@pytest.mark.parametrize("name,call", MAPPINGS, ids=[f"{i}-{c[0]}" for i, c in enumerate(MAPPINGS)])
def test_every_table_argument_is_typed_then_non_empty(name, call):
    with pytest.raises(TypeError, match=f"^{name} must be a "):
        call([("a", 1)])
    with pytest.raises(ValueError, match=f"^{name} must hold at least one "):
        call({})


def test_value_checks_go_through_one_read():
    """The range checks of t and y read the device through checks.read_values, once each."""
    reads = []
    original = checks.read_values
    checks.read_values = lambda x: reads.append(1) or original(x)
    try:
        MLP(X, T0, Y)
    finally:
        checks.read_values = original
    assert len(reads) == 2  # t's range, y's range


def test_check_reals_check_ints_check_strs_and_check_span():
    assert check_reals(torch.tensor([1.0, 2.0]), "gammas") == [1.0, 2.0]
    assert check_reals((1, 2.5), "gammas", low=0) == [1.0, 2.5]
    with pytest.raises(TypeError, match=r"^gammas\[1\] must be a real number"):
        check_reals([1.0, "2"], "gammas")
    with pytest.raises(ValueError, match=r"^gammas\[0\] must be"):
        check_reals([-1.0], "gammas", low=0)
    with pytest.raises(ValueError, match="^gammas must hold at least one value"):
        check_reals([], "gammas")
    with pytest.raises(TypeError, match="^gammas must be a sequence"):
        check_reals(torch.zeros(2, 2), "gammas")
    assert check_ints(torch.tensor([2, 8]), "dims", low=1) == [2, 8]
    assert check_ints(range(3), "seeds") == [0, 1, 2]
    with pytest.raises(TypeError, match=r"^dims\[1\] must be an int"):
        check_ints([2, 8.0], "dims")
    with pytest.raises(ValueError, match=r"^dims\[0\] must be an int >= 1"):
        check_ints([0], "dims", low=1)
    with pytest.raises(TypeError, match="^seeds must be a sequence of ints"):
        check_ints("012", "seeds")
    with pytest.raises(ValueError, match="^seeds must hold at least one value"):
        check_ints([], "seeds")
    assert check_span([1, 2], "far") == (1.0, 2.0)
    with pytest.raises(TypeError, match="^far must be a pair"):
        check_span((1, 2, 3), "far")
    with pytest.raises(ValueError, match=r"^far must have low < high, got \(2, 2\)"):
        check_span((2, 2), "far")
    assert check_strs(("a", "b"), "metrics") == ["a", "b"] and check_strs([], "metrics") == []
    with pytest.raises(TypeError, match="^metrics must be a sequence of str, got str"):
        check_strs("to_tilted", "metrics")  # not read letter by letter
    with pytest.raises(TypeError, match=r"^row_labels\[1\] must be a str, got int"):
        check_strs(["a", 1], "row_labels")


def test_meta_tensors_have_no_values_to_check():
    check_steps(torch.zeros(3, dtype=torch.long, device="meta"), 3, 5)
    check_labels(torch.zeros(3, dtype=torch.long, device="meta"), 3, 2)


def test_check_archive_reads_every_parts_checksum(tmp_path):
    from conftest import flip_a_byte_of

    weights = torch.linspace(-1, 1, 256)
    path = tmp_path / "w.pt"
    torch.save({"w": weights}, path)
    checks.check_archive(path, "w.pt")  # intact: no error
    flip_a_byte_of(path, weights)  # torch.load alone would return a changed weight
    with pytest.raises(ValueError, match="^w.pt is corrupt: its part .* fails its checksum"):
        checks.check_archive(path, "w.pt")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="^w.pt is corrupt or truncated"):
        checks.check_archive(path, "w.pt")


def test_check_alike_one_shape_and_device_any_float_dtype():
    x = torch.zeros(4, 2)
    checks.check_alike(x_t=x, eps=x.double(), noise=None)  # float64 meets float32; None: not given
    with pytest.raises(
        ValueError, match=r"^x_t \(4, 2\) and eps \(4, 1\) must have the same shape"
    ):
        checks.check_alike(x_t=x, eps=torch.zeros(4, 1))  # would broadcast
    with pytest.raises(TypeError, match="^eps"):
        checks.check_alike(x_t=x, eps=x.long())


# ---- every public function, with a str where its required arguments go -----------------------------

# where a str is a valid first argument, or a file name that is not there says so itself
STR_IS_VALID = {
    "device.pick",  # any two values, one per budget
    "report.glue",  # a name and a value
    "report.glue_table",
    "report.glue_key",
    "text.tokenize",  # captions: an unknown word is a ValueError that names it
    "text.caption_mask",
    "text.caption_digits",
    "data.read_idx",  # a path: FileNotFoundError names it
    "data.load_mnist",
}


def _public(kind):
    """("module.name", obj, its named parameters) for every public function (``kind`` "function")
    or class ("class") that a module of the package defines; classes without a signature of their
    own (a str or dict subclass) are left out."""
    import importlib
    import inspect
    import pkgutil

    import diffcourse

    test = inspect.isfunction if kind == "function" else inspect.isclass
    for info in pkgutil.iter_modules(diffcourse.__path__):
        if info.name in ("checks", "train", "bench", "__main__"):  # the checks; command lines
            continue
        module = importlib.import_module(f"diffcourse.{info.name}")
        for name, obj in vars(module).items():
            if name.startswith("_") or not test(obj) or obj.__module__ != module.__name__:
                continue
            try:
                params = inspect.signature(obj).parameters.values()
            except ValueError:
                continue
            named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            yield f"{info.name}.{name}", obj, named


def _public_functions():
    for name, fn, named in _public("function"):
        required = [p for p in named if p.default is p.empty]
        if name not in STR_IS_VALID and required:
            yield name, fn, required


def _names_a_parameter(call, **args):
    """``call(**args)`` raises a TypeError or ValueError whose message begins with the name of
    one of ``call``'s own parameters."""
    import inspect
    import re

    with pytest.raises((TypeError, ValueError)) as info:
        call(**args)
    first = re.match(r"[A-Za-z_]\w*", str(info.value))
    assert first and first.group() in inspect.signature(call).parameters, (args, str(info.value))


FUNCTIONS = list(_public_functions())


@pytest.mark.parametrize("name,fn,required", FUNCTIONS, ids=[f[0] for f in FUNCTIONS])
def test_every_public_function_names_the_parameter_of_a_str_where_it_wants_more(name, fn, required):
    """A new public function without argument checks fails here: given the str "bad" for every
    required argument it must raise a TypeError or ValueError whose message begins with the name
    of one of its parameters, not an AttributeError from deep inside or a result."""
    _names_a_parameter(fn, **{p.name: "bad" for p in required})


def _public_classes():
    """Every public class but the NamedTuples the package returns as results, with the calls to
    try: "bad" for all required arguments, or, where none is required, for each optional one."""
    for name, cls, named in _public("class"):
        required = [p.name for p in named if p.default is p.empty]
        calls = [required] if required else [[p.name] for p in named]
        if not issubclass(cls, tuple) and calls:
            yield name, cls, calls


CLASSES = list(_public_classes())


@pytest.mark.parametrize("name,cls,calls", CLASSES, ids=[c[0] for c in CLASSES])
def test_every_public_class_names_the_parameter_of_a_str_where_it_wants_more(name, cls, calls):
    """The classes' twin of the test above: a network given a str for its width, or a recipe or
    a container built by hand from strs, is refused by a message that begins with one of the
    class's own parameters (not an inner layer's, as CaptionUNet(text_dim="bad") once named
    Linear's in_features), and never built."""
    for names in calls:
        _names_a_parameter(cls, **{n: "bad" for n in names})
