"""The course's guidance rules scored against the exact answer on Gaussian mixtures (chapter 12).

A :class:`Rule` is one entry of a list: a name, a function that draws samples for a
:class:`Setting` (a mixture, a schedule, the asked class y, the scale gamma, the DDIM levels), and
its cost in network evaluations per sample. :func:`evaluate` runs a list of rules on one setting
over several seeds and scores each seed's samples with :func:`score_samples`:

- ``to_cond``: sliced-W2 distance to exact draws from p(x|y), over its noise floor (the same
  distance between two independent sets of exact draws, chapter 1);
- ``to_tilted``: the same against exact draws from the tilted law p(x|y)^gamma p(x)^(1-gamma) / Z
  (:func:`~diffcourse.mixture.sample_tilted_rejection`);
- ``agreement``: the share of samples the exact Bayes classifier assigns to y;
- ``spread``: trace of the samples' covariance over that of exact draws from p(x|y);
- ``modes``: 1 minus the total-variation distance between the shares of class y's components among
  the samples (each sample counted in the component most responsible for it) and their weights;
  1 when every mode gets its share;
- ``nfe``: network evaluations per sample.

:func:`robust_pairs` keeps the pairs of rules whose order on a metric holds on every seed: the
only part of a ranking a text should state. :func:`package_rules` lists the package's rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from . import guidance
from .checks import (
    check_bool,
    check_callable,
    check_finite,
    check_int,
    check_ints,
    check_mapping,
    check_mixture,
    check_name,
    check_real,
    check_schedule,
    check_strs,
    check_tensor,
)
from .flow import cfg_zero_star_fn, euler_sample, zero_init_time
from .metrics import class_agreement, sample_distance, spread
from .mixture import (
    GaussianMixture,
    class_mixture,
    exact_cfg_velocity_fn,
    exact_eps_fn,
    exact_log_ratio_fn,
    exact_velocity_fn,
    sample_tilted_rejection,
)
from .samplers import ddim_sample, ddpm_sample, pc_sample
from .schedules import Schedule, ddim_levels

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
METRICS = ("to_cond", "to_tilted", "agreement", "spread", "modes", "nfe")
LOWER_IS_BETTER = {
    "to_cond": True,
    "to_tilted": True,
    "agreement": False,
    "spread": False,
    "modes": False,
    "nfe": True,
}


@dataclass(frozen=True)
class Setting:
    """What a rule samples: class ``y`` of ``mixture`` at scale ``gamma``, on ``schedule``; rules
    that skip levels use DDIM (eta = 0) on ``levels`` of them. The exact noise predictors are built
    once and shared by every rule."""

    mixture: GaussianMixture
    schedule: Schedule
    y: int
    gamma: float
    levels: Optional[int] = None  # default: 25, or every level of a shorter chain
    name: str = ""

    def __post_init__(self):
        check_mixture(self.mixture)._check_y(self.y, 1)
        check_schedule(self.schedule)
        guidance._check_gamma(self.gamma)
        if self.levels is None:
            object.__setattr__(self, "levels", min(25, self.schedule.T))
        check_int(self.levels, "levels", low=2, high=self.schedule.T)

    @cached_property
    def cond(self) -> Fn:
        """eps(x_t, t, y), exact: the noise prediction of class y's components alone (same numbers,
        less work)."""
        return exact_eps_fn(class_mixture(self.mixture, self.y), self.schedule)

    @cached_property
    def uncond(self) -> Fn:
        return exact_eps_fn(self.mixture, self.schedule)

    def cfg(self, gamma: Optional[float] = None) -> Fn:
        """Eq. 170 with the exact predictors, at ``gamma`` (default: the setting's)."""
        return guidance.classifier_free_eps_fn(
            self.cond, self.uncond, self.gamma if gamma is None else gamma
        )

    def ddim(self, eps_fn, noise: torch.Tensor) -> torch.Tensor:
        return ddim_sample(eps_fn, noise, self.schedule, steps=self.levels, progress=False)

    @cached_property
    def interval(self) -> Tuple[int, int]:
        """The levels whose noise-to-signal ratio sigma_t / sqrt(alpha_bar_t) lies in [1/3, 3]
        (chapter 8's choice): (t_low, t_high)."""
        ab = self.schedule.alpha_bar
        inside = ((((1 - ab) / ab).sqrt() >= 1 / 3) & (((1 - ab) / ab).sqrt() <= 3)).nonzero()[:, 0]
        return int(inside.min()), int(inside.max())

    @cached_property
    def interval_levels(self) -> int:
        low, high = self.interval
        return sum(low <= t <= high for t in ddim_levels(self.schedule.T, self.levels))

    @cached_property
    def cfgpp_lambda(self) -> float:
        """CFG++'s lambda whose DDIM step at the middle visited level equals eq. 170's at gamma
        (chapter 8, :func:`~diffcourse.guidance.lam_matching`), at most 1 (CFG++'s range)."""
        return min(guidance.lam_matching(self.schedule, self.levels, self.gamma), 1.0)


@dataclass(frozen=True)
class Rule:
    """One row of the leaderboard. ``sample(setting, noise, generator)`` returns samples from the
    starting noise; ``nfe(setting)`` their cost in network evaluations per sample; ``applies(setting)``
    says whether the rule makes sense there (rescaling and thresholding need image-like data)."""

    name: str
    sample: Callable[[Setting, torch.Tensor, torch.Generator], torch.Tensor]
    nfe: Callable[[Setting], float]
    applies: Callable[[Setting], bool] = field(default=lambda setting: True)

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        for name in ("sample", "nfe", "applies"):
            check_callable(getattr(self, name), name)


def package_rules(
    pc_steps: int = 1,
    snr: float = 0.1,
    phi: float = 0.7,
    apg_eta: float = 0.0,
    apg_beta: float = -0.5,
    weak_factor: float = 2.0,
    fbg_max_gamma: float = 10.0,
    zero_steps: int = 1,
) -> List[Rule]:
    """The guidance rules of ``diffcourse.guidance``, a :class:`Rule` each, with chapter 8's settings.
    Left out, as chapter 12 says: classifier guidance, the composed rule and negative prompts (with
    an exact classifier, one term or the null label, each is eq. 170) and chapter 8's ramped scales
    (compared with the constant scale in lab 8b).

    All but eq. 170 with DDPM, the predictor-corrector and chapter 11's two velocity rules (Euler)
    run DDIM (eta = 0) on ``setting.levels`` levels.
    Feedback guidance takes pi = 1 / max(gamma, 1), so that where x_t says nothing about the class
    (R = 1) its scale is gamma (1 for gamma < 1); autoguidance's weak model is the exact conditional
    law with every covariance multiplied by ``weak_factor``. ICG draws its random labels uniformly
    from the generator. The two velocity rules of chapter 11 treat the mixture as a flow model:
    eq. 170 on exact velocities and CFG-Zero* (optimised scale, the first ``zero_steps`` Euler steps
    zeroed, about 4% of 25 as Fan et al. suggest), both by Euler on ``setting.levels`` equal steps.
    """
    # each checked now, not when its rule first runs, deep inside a leaderboard's evaluation
    check_int(pc_steps, "pc_steps", low=0)
    check_real(snr, "snr", low=0, low_open=True)
    check_real(phi, "phi", low=0, high=1)
    check_real(apg_eta, "apg_eta")
    check_real(apg_beta, "apg_beta")
    check_real(weak_factor, "weak_factor", low=0, low_open=True)
    check_real(fbg_max_gamma, "fbg_max_gamma", low=1, low_open=True)
    check_int(zero_steps, "zero_steps", low=0)
    T = lambda s: s.schedule.T
    image_like = lambda s: s.mixture.dim > 2

    def icg(s: Setting, noise, gen):
        model = lambda x, t, labels: exact_eps_fn(s.mixture, s.schedule, labels)(x, t)
        y = torch.full((noise.shape[0],), s.y, dtype=torch.long, device=noise.device)
        return s.ddim(
            guidance.independent_condition_eps_fn(model, y, s.gamma, s.mixture.num_classes, gen),
            noise,
        )

    def feedback(s: Setting, noise, gen):
        ratio = exact_log_ratio_fn(s.mixture, s.schedule, s.y)
        return s.ddim(
            guidance.feedback_eps_fn(s.cond, s.uncond, ratio, 1 / max(s.gamma, 1.0), fbg_max_gamma),
            noise,
        )

    def auto(s: Setting, noise, gen):
        weak = exact_eps_fn(class_mixture(s.mixture.widened(weak_factor), s.y), s.schedule)
        return s.ddim(guidance.autoguidance_eps_fn(s.cond, weak, s.gamma), noise)

    def rescaled(s: Setting, noise, gen):
        return s.ddim(guidance.rescaled_cfg_eps_fn(s.cond, s.uncond, s.gamma, phi), noise)

    def rescaled_v(s: Setting, noise, gen):
        fn = guidance.rescaled_cfg_v_eps_fn(s.cond, s.uncond, s.schedule, s.gamma, phi)
        return s.ddim(fn, noise)

    def interval(s: Setting, noise, gen):
        return s.ddim(guidance.interval_cfg_eps_fn(s.cond, s.uncond, s.gamma, *s.interval), noise)

    # Chapter 11: the same mixture as a flow model (the straight path, exact velocities), sampled
    # with Euler on s.levels equal steps of t from the same starting noise (x_1 is the noise).
    def velocity(s: Setting, noise, gen):
        v_fn = exact_cfg_velocity_fn(s.mixture, s.y, s.gamma)
        return euler_sample(v_fn, noise, steps=s.levels, progress=False)

    def zero_star(s: Setting, noise, gen):
        v_c, v_u = exact_velocity_fn(s.mixture, s.y), exact_velocity_fn(s.mixture)
        t_zero = zero_init_time(s.levels, zero_steps)
        v_fn = cfg_zero_star_fn(v_c, v_u, s.gamma, t_zero=t_zero)
        return euler_sample(v_fn, noise, steps=s.levels, progress=False)

    return [
        Rule("conditional, gamma = 1", lambda s, z, g: s.ddim(s.cond, z), lambda s: s.levels),
        Rule(
            "eq. 170, DDPM",
            lambda s, z, g: ddpm_sample(s.cfg(), z, s.schedule, generator=g, progress=False),
            lambda s: 2 * T(s),
        ),
        Rule("eq. 170, DDIM", lambda s, z, g: s.ddim(s.cfg(), z), lambda s: 2 * s.levels),
        Rule(
            f"predictor-corrector, K = {pc_steps}",
            lambda s, z, g: pc_sample(
                s.cfg(),
                z,
                s.schedule,
                corrector_steps=pc_steps,
                snr=snr,
                generator=g,
                progress=False,
            ),
            lambda s: 2 * (T(s) + (T(s) - 1) * pc_steps),
        ),
        Rule("interval", interval, lambda s: s.levels + s.interval_levels),
        Rule(f"rescaled, phi = {phi:g}", rescaled, lambda s: 2 * s.levels, image_like),
        Rule(f"rescaled on v, phi = {phi:g}", rescaled_v, lambda s: 2 * s.levels, image_like),
        Rule(
            f"APG, eta = {apg_eta:g}, beta = {apg_beta:g}",
            lambda s, z, g: s.ddim(
                guidance.apg_eps_fn(
                    s.cond, s.uncond, s.schedule, s.gamma, eta=apg_eta, beta=apg_beta
                ),
                z,
            ),
            lambda s: 2 * s.levels,
        ),
        Rule(
            "CFG++, lambda matched",
            lambda s, z, g: s.ddim(guidance.cfgpp_eps_fn(s.cond, s.uncond, s.cfgpp_lambda), z),
            lambda s: 2 * s.levels,
        ),
        Rule(
            "dynamic thresholding",
            lambda s, z, g: s.ddim(guidance.dynamic_threshold_eps_fn(s.cfg(), s.schedule), z),
            lambda s: 2 * s.levels,
            image_like,
        ),
        Rule(f"autoguidance, weak = covariances x {weak_factor:g}", auto, lambda s: 2 * s.levels),
        Rule("independent condition (ICG)", icg, lambda s: 2 * s.levels),
        Rule("feedback (FBG), pi = 1/gamma", feedback, lambda s: 2 * s.levels),
        Rule("eq. 170 on velocities, Euler", velocity, lambda s: 2 * s.levels),
        # zeroed steps evaluate nothing
        Rule("CFG-Zero*, Euler", zero_star, lambda s: 2 * (s.levels - zero_steps)),
        # Chapter 10's composed rule with one term, (cond_fn, gamma), is eq. 170 itself
        # (tests/test_guidance.py): it would repeat the eq. 170 rows.
    ]


def reference_rules() -> List[Rule]:
    """Two rows that are not guidance rules but set the scale: exact draws from p(x|y) and from the
    tilted law. A perfect sampler of either law sits near 1 on its own distance (the noise floor)."""

    def tilted(s: Setting, noise, gen):
        return sample_tilted_rejection(s.mixture, s.y, s.gamma, noise.shape[0], generator=gen).to(
            noise.dtype
        )

    return [
        Rule(
            "exact draws from p(x|y)",
            lambda s, z, g: s.mixture.sample(z.shape[0], s.y, generator=g)[0],
            lambda s: 0,
        ),
        Rule("exact draws from the tilted law", tilted, lambda s: 0),
    ]


# ---- scoring ---------------------------------------------------------------------------------------------


def mode_coverage(x: torch.Tensor, mixture: GaussianMixture, y: int) -> float:
    """1 - total variation between the shares of class y's components among ``x`` and their weights
    within the class: each sample counts for the component of class y with the largest
    responsibility for it. 1 when every mode of the class gets its due share; a class with one
    component always scores 1."""
    check_tensor(x, "x", floating=True, shape=(None, check_mixture(mixture).dim), nonempty=True)
    check_finite(x, "x")  # a NaN row would count for the first component
    law = class_mixture(mixture, y)
    x = x.to(law.device, law.dtype)
    nearest = law._component_log_joint(x)[0].argmax(1)
    shares = torch.bincount(nearest, minlength=law.num_components).double() / x.shape[0]
    return 1 - 0.5 * (shares - law.weights.double()).abs().sum().item()


def _check_setting(setting) -> Setting:
    if not isinstance(setting, Setting):
        raise TypeError(f"setting must be a leaderboard.Setting, got {type(setting).__name__}")
    return setting


class References:
    """Exact draws per seed, and the noise floors, for one setting: drawn once, shared by every rule.

    For a seed and a target law (p(x|y), or the tilted law), ``draws`` are n exact points and
    ``floor`` is the sliced-W2 distance between two further independent sets of n exact points,
    over ``repeats`` chunks (:func:`~diffcourse.metrics.sample_distance`): the distance a perfect
    sampler reaches by chance."""

    def __init__(self, setting: Setting, n: int, repeats: int = 5, projections: int = 256):
        _check_setting(setting)
        repeats = check_int(repeats, "repeats", low=1)
        n = check_int(n, "n", low=2 * repeats)  # each of the repeats chunks needs two points
        self.setting, self.n, self.repeats, self.projections = setting, n, repeats, projections
        self._cache: Dict[Tuple[str, int], Tuple[torch.Tensor, float]] = {}

    def _draw(self, target: str, n: int, gen: torch.Generator) -> torch.Tensor:
        s = self.setting
        if target == "cond":
            return s.mixture.sample(n, s.y, generator=gen)[0]
        return sample_tilted_rejection(s.mixture, s.y, s.gamma, n, generator=gen)

    def get(self, target: str, seed: int) -> Tuple[torch.Tensor, float]:
        """(exact draws, noise floor) for ``target`` in ("cond", "tilted") and ``seed``."""
        if target not in ("cond", "tilted"):
            raise ValueError(f"target must be 'cond' or 'tilted', got {target!r}")
        key = (target, seed)
        if key not in self._cache:
            gen = torch.Generator(device=self.setting.mixture.device).manual_seed(10_000 + seed)
            draws, a, b = (self._draw(target, self.n, gen).cpu().double() for _ in range(3))
            floor = sample_distance(a, b, self.repeats, self.projections, seed)
            self._cache[key] = (draws, floor)
        return self._cache[key]


def score_samples(x: torch.Tensor, refs: References, seed: int) -> Dict[str, float]:
    """The leaderboard's metrics (less ``nfe``) of one seed's samples ``x`` [n, D]."""
    check_tensor(x, "x", floating=True)
    if not isinstance(refs, References):
        raise TypeError(f"refs must be a References, got {type(refs).__name__}")
    s = refs.setting
    x = x.detach().cpu().double()
    if x.shape != (refs.n, s.mixture.dim):
        raise ValueError(f"x must have shape ({refs.n}, {s.mixture.dim}), got {tuple(x.shape)}")
    check_finite(x, "x")
    out = {}
    for target in ("cond", "tilted"):
        draws, floor = refs.get(target, seed)
        out[f"to_{target}"] = (
            sample_distance(x, draws, refs.repeats, refs.projections, seed) / floor
        )
    cond_draws = refs.get("cond", seed)[0]
    out["agreement"] = class_agreement(x.to(s.mixture.dtype), s.y, s.mixture.to("cpu"))
    out["spread"] = spread(x, cond_draws)
    out["modes"] = mode_coverage(x, s.mixture.to("cpu"), s.y)
    return out


def evaluate(
    rules: Sequence[Rule],
    setting: Setting,
    n: int,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    refs: Optional[References] = None,
    keep_samples: bool = False,
    progress: bool = False,
):
    """Run every rule that applies on ``setting`` for each seed and score it.

    Each seed has its own starting noise (n points from ``torch.Generator().manual_seed(seed)``);
    the seeds are stacked into one batch so that a rule's per-level cost is paid once, and the
    sampler's own noise comes from one generator seeded by the first seed. Returns a list of rows
    ``{"mixture", "rule", "seed", <metric>: value}``, and with ``keep_samples`` also a dict
    rule name -> samples [len(seeds) * n, D] (seed-major).
    """
    if (
        isinstance(rules, (str, bytes))
        or not isinstance(rules, Sequence)
        or not all(isinstance(r, Rule) for r in rules)
    ):
        raise TypeError(f"rules must be a sequence of Rule, got {type(rules).__name__}")
    if not rules:
        raise ValueError("rules must hold at least one Rule")
    _check_setting(setting)
    seeds = _check_seeds(seeds)
    check_bool(keep_samples, "keep_samples"), check_bool(progress, "progress")
    refs = refs if refs is not None else References(setting, n)
    if refs.setting is not setting or refs.n != n:
        raise ValueError("refs must belong to this setting and n")
    dev, dtype = setting.mixture.device, setting.mixture.dtype
    noise = torch.cat(
        [
            torch.randn(
                n, setting.mixture.dim, generator=torch.Generator().manual_seed(seed), dtype=dtype
            )
            for seed in seeds
        ]
    ).to(dev)
    rows, kept = [], {}
    for rule in rules:
        if not rule.applies(setting):
            continue
        gen = torch.Generator(device=dev).manual_seed(seeds[0])
        x = rule.sample(setting, noise, gen)
        nfe = float(rule.nfe(setting))
        for i, seed in enumerate(seeds):
            row = {"mixture": setting.name, "rule": rule.name, "seed": seed}
            row.update(score_samples(x[i * n : (i + 1) * n], refs, seed))
            row["nfe"] = nfe
            rows.append(row)
        if keep_samples:
            kept[rule.name] = x.detach().cpu()
        if progress:
            print(f"{setting.name}: {rule.name} done")
    return (rows, kept) if keep_samples else rows


def _check_seeds(seeds) -> List[int]:
    """A non-empty sequence of distinct int seeds."""
    seeds = check_ints(seeds, "seeds")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {seeds}")
    return seeds


def check_rows(rows, metrics: Sequence[str] = ()) -> List[dict]:
    """``rows`` as :func:`evaluate` returns them: a non-empty list of dicts, each with a mixture, a
    rule, a seed and every metric in ``metrics``."""
    if isinstance(rows, (str, bytes, dict)) or not isinstance(rows, Sequence):
        raise TypeError(
            f"rows must be a list of dicts, as evaluate returns, got {type(rows).__name__}"
        )
    if not rows:
        raise ValueError("rows must hold at least one row")
    metrics = check_strs(metrics, "metrics")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise TypeError(f"rows[{i}] must be a dict, got {type(row).__name__}")
        missing = [k for k in ("mixture", "rule", "seed", *metrics) if k not in row]
        if missing:
            raise ValueError(f"rows[{i}] lacks {missing}")
        for m in metrics:  # a NaN made a mean NaN, and a rule neither beat nor beaten by any
            check_real(row[m], f"rows[{i}][{m!r}]")
    return list(rows)


def summarize(
    rows: Sequence[dict], metrics: Sequence[str] = METRICS
) -> Dict[Tuple[str, str], Dict[str, Tuple[float, float]]]:
    """(mixture, rule) -> metric -> (mean over seeds, standard deviation over seeds)."""
    check_rows(rows, metrics)
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for row in rows:
        groups.setdefault((row["mixture"], row["rule"]), []).append(row)
    out = {}
    for key, group in groups.items():
        out[key] = {}
        for m in metrics:
            values = torch.tensor([r[m] for r in group], dtype=torch.float64)
            std = values.std().item() if len(values) > 1 else 0.0
            out[key][m] = (values.mean().item(), std)
    return out


def robust_pairs(
    rows: Sequence[dict], metric: str, mixture: Optional[str] = None
) -> List[Tuple[str, str]]:
    """Pairs (a, b) of rules such that a beats b on ``metric`` on every seed (lower is better for
    distances and NFE, higher for agreement, spread and modes), within one mixture. A ranking's
    robust part: what the data say whatever the seed."""
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"metric must be one of {sorted(LOWER_IS_BETTER)}, got {metric!r}")
    check_rows(rows, [metric])
    held = {row["mixture"] for row in rows}
    if mixture is None and len(held) > 1:
        raise ValueError("rows hold several mixtures: name one with mixture=...")
    if mixture is not None and mixture not in held:
        raise ValueError(
            f"mixture must be one of the rows' mixtures {sorted(held)}, got {mixture!r}"
        )
    table: Dict[str, Dict[int, float]] = {}
    for row in rows:
        if mixture is None or row["mixture"] == mixture:
            table.setdefault(row["rule"], {})[row["seed"]] = row[metric]
    names = list(table)
    sign = 1 if LOWER_IS_BETTER[metric] else -1
    pairs = []
    for a in names:
        for b in names:
            seeds = set(table[a]) & set(table[b])
            if a != b and seeds and all(sign * table[a][s] < sign * table[b][s] for s in seeds):
                pairs.append((a, b))
    return pairs


# ---- reading the board ------------------------------------------------------------------------------------


def show(rows: Sequence[dict]) -> Dict[Tuple[str, str], Dict[str, Tuple[float, float]]]:
    """One table per mixture, a row per rule: NFE, the means over the seeds of the metrics, and the
    standard deviation over the seeds of the distance to the tilted law. Returns :func:`summarize`."""
    from .report import table

    board = summarize(rows)
    header = ["rule", "NFE", "to p(x|y)", "to tilted", "sd", "agreement", "spread", "modes"]
    for name in dict.fromkeys(mix for mix, _ in board):
        cells = [
            [
                rule,
                *[board[mix, rule][c][0] for c in ("nfe", "to_cond", "to_tilted")],
                board[mix, rule]["to_tilted"][1],
                *[board[mix, rule][c][0] for c in ("agreement", "spread", "modes")],
            ]
            for mix, rule in board
            if mix == name
        ]
        table(
            cells,
            header,
            floatfmt=[None, ".0f", ".2f", ".2f", ".2f", ".3f", ".3f", ".3f"],
            title=f"{name}: means over the seeds (sd: of 'to tilted')",
        )
    return board


def side_by_side(
    board: Dict[Tuple[str, str], Dict[str, Tuple[float, float]]],
    metrics: Sequence[str] = ("to_tilted", "spread"),
) -> Tuple[List[list], List[str]]:
    """``(rows, header)`` for :func:`~diffcourse.report.table`: the whole board (what :func:`show`
    returns) in one table, a row per rule with its NFE, then the means of ``metrics`` mixture by
    mixture (None where the rule did not run on that mixture)."""
    what = "dict (mixture, rule) -> metrics, as show returns"
    check_mapping(board, "board", what, "(mixture, rule)", kind=dict)
    metrics = check_strs(metrics, "metrics", empty=False)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"metrics: unknown {unknown}; known: {list(METRICS)}")
    mixtures = list(dict.fromkeys(mix for mix, _ in board))
    rules = list(dict.fromkeys(rule for _, rule in board))
    rows = []
    for rule in rules:
        first = next(board[mix, rule] for mix in mixtures if (mix, rule) in board)
        cells = [
            board[mix, rule][m][0] if (mix, rule) in board else None
            for mix in mixtures
            for m in metrics
        ]
        rows.append([rule, first["nfe"][0], *cells])
    return rows, ["rule", "NFE", *[f"{mix}: {m}" for mix in mixtures for m in metrics]]


def common_robust_pairs(rows: Sequence[dict], metric: str) -> List[Tuple[str, str]]:
    """The pairs of :func:`robust_pairs` that hold on every mixture in ``rows``, sorted."""
    check_rows(rows, [metric])
    names = list(dict.fromkeys(row["mixture"] for row in rows))
    sets = [set(robust_pairs([r for r in rows if r["mixture"] == name], metric)) for name in names]
    return sorted(set.intersection(*sets)) if sets else []


def floor_calibration(
    setting: Setting, n: int, seeds: Sequence[int] = tuple(range(100, 140))
) -> float:
    """A perfect sampler's distance over the floor, averaged: for each seed, fresh exact draws from
    p(x|y) against that seed's reference set, summed over the seeds and divided by the sum of the
    seeds' floors. Near 1 when the floor is what it claims to be; a floor off by a factor shows
    here as that factor."""
    seeds = _check_seeds(seeds)
    refs = References(setting, n)
    distance = floor = 0.0
    for seed in seeds:
        gen = torch.Generator(device=setting.mixture.device).manual_seed(20_000 + seed)
        draws, seed_floor = refs.get("cond", seed)
        x = setting.mixture.sample(n, setting.y, generator=gen)[0].cpu().double()
        distance += sample_distance(x, draws, refs.repeats, refs.projections, seed)
        floor += seed_floor
    return distance / floor


def seed_gaps(samples_a: torch.Tensor, samples_b: torch.Tensor, n: int) -> List[float]:
    """How far two rules' samples (stacked seed by seed, n per seed, as :func:`evaluate` keeps them)
    lie apart, against chance: for each seed i, the distance between a's and b's samples of that seed
    over the distance between b's samples of seeds i and i + 1 (the last seed against the first).
    Near 1 when a and b sample one law."""
    # by name here: sample_distance would name its own x and ref
    check_finite(check_tensor(samples_a, "samples_a", floating=True, ndim=2), "samples_a")
    check_finite(check_tensor(samples_b, "samples_b", floating=True, ndim=2), "samples_b")
    n = check_int(n, "n", low=1)
    a, b = samples_a.split(n), samples_b.split(n)
    if len(a) != len(b) or len(b) < 2 or {a[-1].shape[0], b[-1].shape[0]} != {n}:
        raise ValueError(
            "samples_a and samples_b must hold the same number (>= 2) of seeds of n samples"
        )
    return [
        sample_distance(a[i], b[i]) / sample_distance(b[i], b[(i + 1) % len(b)])
        for i in range(len(b))
    ]


def evaluate_mixtures(
    rules: Sequence[Rule],
    mixtures: Dict[str, Tuple[GaussianMixture, int, int]],
    schedule: Schedule,
    gamma: float,
    device=None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
) -> Tuple[List[dict], Dict[str, Dict[str, torch.Tensor]]]:
    """:func:`evaluate` (samples kept) of every rule on several mixtures, one board: ``mixtures``
    maps a name to (mixture, asked class y, n samples per seed), each run as
    ``Setting(mixture, schedule, y, gamma, name=name)`` (on ``device`` where given). Returns all the
    rows, mixture after mixture, and ``{name: {rule: samples}}``."""
    check_mapping(mixtures, "mixtures", "dict name -> (mixture, y, n)", "mixture", kind=dict)
    rows, kept = [], {}
    for name, entry in mixtures.items():
        if not isinstance(entry, tuple) or len(entry) != 3:
            raise ValueError(f"mixtures[{name!r}] must be (mixture, y, n), got {entry!r}")
        m, y, n = entry
        setting = Setting(m if device is None else m.to(device), schedule, y, gamma, name=name)
        r, kept[name] = evaluate(rules, setting, n, seeds, keep_samples=True)
        rows += r
    return rows, kept
