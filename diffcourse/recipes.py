"""Named training recipes: the labs' models, one call each, trained once and cached on disk.

A recipe holds everything that makes a model: its data, schedule, network and sizes, its training
settings, and its seeds (``init_seed`` seeds the initial weights, ``seed`` the training's batches,
times and noise). Sizes that grow with the budget are resolved through
:func:`~diffcourse.device.pick`. So a later lab gets chapter 4's denoiser with
``recipes.trained("ch4-denoiser")`` instead of copying its settings, and ``python -m
diffcourse.train --config ch4-denoiser`` trains the same model from the shell.

:func:`trained` keeps the trained weights in a cache folder (``DIFFCOURSE_CACHE``, default
``~/.cache/diffcourse``; ``make test`` uses ``_build/.model_cache``), under a key made of the
recipe's name and resolved settings, the budget, the device type, the torch version and a hash of
the package's sources that training runs, so a second lab asking for the same model loads it in
a moment. Any change to one of these trains afresh. A damaged or foreign cache file is reported
with a warning and trained again, never used. ``DIFFCOURSE_CACHE=off`` turns the cache off.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import nn

from . import data as datasets
from . import models
from .checks import (
    check_archive,
    check_bool,
    check_choice,
    check_device,
    check_int,
    check_mapping,
    check_probability,
    check_span,
)
from .device import BUDGETS, get_device
from .device import budget as current_budget
from .schedules import Schedule, cosine_schedule, linear_schedule
from .train import Settings

CACHE_FORMAT = "diffcourse-recipe-cache-1"
DIGITS_MIXTURE_DRAWS = 50_000  # chapter 12's training set: draws from data.digits_mixture(), seed 0
# the modules whose code decides a trained model's weights: a change to any of them retrains
SOURCES = (
    "checks.py",
    "data.py",
    "mixture.py",
    "models.py",
    "recipes.py",
    "schedules.py",
    "targets.py",
    "train.py",
    "text.py",
    "conditioned.py",
    "flow.py",
    "layers.py",
)


# what Recipe.make_data builds, and the trainers Recipe.train runs
DATA = (
    "two_moons",
    "checkerboard",
    "three_blobs",
    "digits",
    "digits-judge",
    "digits_mixture",
    "digit-captions",
    "digits-low",
)
TRAINERS = ("denoiser", "classifier", "velocity", "student")


@dataclass(frozen=True)
class Recipe:
    """A fully resolved training recipe (see :func:`get`). Its fields are checked as it is built,
    so a recipe made by hand fails at once, naming the field, not partway through its training."""

    name: str
    budget: str
    # "two_moons" | "checkerboard" | "three_blobs" | "digits" (the 8x8 training split)
    # | "digits-judge" (that split less chapter 7's floor set, data.digits_eval_sets)
    # | "digit-captions" (each training digit with CAPTION_COPIES captions) | "digits-low" (with
    # its 4x4 view, chapter 10) | "digits_mixture" (draws from the 64-D mixture, chapter 12)
    data: str
    schedule: Optional[Tuple[str, int]]  # ("cosine", T), ("linear", T); None: judge, flow model
    model: str  # a class of diffcourse.models or diffcourse.conditioned
    model_args: Dict[str, Any]
    trainer: str  # "denoiser" | "classifier" | "velocity" | "student" (chapter 11's flow matching)
    steps: int
    batch_size: int
    lr: float
    p_uncond: Optional[float] = (
        None  # condition dropout of a denoiser (None: train_denoiser's default)
    )
    init_seed: int = 0
    seed: int = 0
    warmup: int = 100
    teacher: Optional[str] = None  # "student": the recipe whose model it distils, and starts from
    gamma_range: Optional[Tuple[float, float]] = None  # "student": the scales it is trained on
    description: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for key in ("name", "description"):
            if not isinstance(getattr(self, key), str):
                raise TypeError(f"{key} must be a str, got {type(getattr(self, key)).__name__}")
        check_choice(self.budget, "budget", BUDGETS)
        check_choice(self.data, "data", DATA)
        if self.schedule is not None:
            if not isinstance(self.schedule, (tuple, list)) or len(self.schedule) != 2:
                raise TypeError(f"schedule must be None or (kind, T), got {self.schedule!r}")
            check_choice(self.schedule[0], "schedule[0]", ("cosine", "linear"))
            check_int(self.schedule[1], "schedule[1]", low=1)
        if not isinstance(self.model, str):
            raise TypeError(f"model must be a str, got {type(self.model).__name__}")
        cls = _model_class(self.model)
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise ValueError(f"model must name a network class of diffcourse, got {self.model!r}")
        args = self.model_args
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise TypeError(
                f"model_args must be a dict of keyword arguments, got {self.model_args!r}"
            )
        check_choice(self.trainer, "trainer", TRAINERS)
        # the training settings by the trainers' own rules (steps, batch_size, lr, warmup, seed)
        Settings(self.steps, self.batch_size, self.lr, self.warmup, self.seed, progress=False)
        if self.p_uncond is not None:
            check_probability(self.p_uncond, "p_uncond")
        check_int(self.init_seed, "init_seed")
        if self.trainer == "student":  # it starts from, and distils, its teacher over a range
            if not isinstance(self.teacher, str):
                raise TypeError(f"teacher must name a recipe, got {type(self.teacher).__name__}")
            check_span(self.gamma_range, "gamma_range")

    def config(self) -> Dict[str, Any]:
        """The settings that decide the weights (all fields but the description), JSON-ready."""
        out = dataclasses.asdict(self)
        out.pop("description")
        return json.loads(json.dumps(out))

    def make_schedule(self) -> Optional[Schedule]:
        if self.schedule is None:
            return None
        kind, T = self.schedule
        return {"cosine": cosine_schedule, "linear": linear_schedule}[kind](T)

    def make_data(self, device=None):
        """The training data on ``device``: a mixture (fresh draws every step) or (x, y) tensors."""
        device = get_device() if device is None else check_device(device)
        if self.data == "digits":
            split = datasets.load_digits_split(holdout=0.25, seed=0)
            return split.x_train.to(device), split.y_train.to(device)
        if self.data == "digits-judge":  # the training digits less chapter 7's floor set
            sets = datasets.digits_eval_sets()
            return sets.x_judge.to(device), sets.y_judge.to(device)
        if (
            self.data == "digits_mixture"
        ):  # chapter 12: fixed draws from the 64-D mixture, as images
            gen = torch.Generator().manual_seed(0)
            x, y = datasets.digits_mixture().sample(DIGITS_MIXTURE_DRAWS, generator=gen)
            return x.reshape(-1, 1, 8, 8).to(device), y.to(device)
        if self.data in ("digit-captions", "digits-low"):
            return _condition_data(self.data, device)
        return getattr(datasets, self.data)().to(device)

    def build(self, device=None) -> nn.Module:
        """The untrained network on ``device``, its initial weights seeded by ``init_seed``. The
        caller's global random state is left as it was."""
        device = get_device() if device is None else check_device(device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.init_seed)
            return _model_class(self.model)(**self.model_args).to(device)

    def train(
        self, device=None, progress: bool = True, **checkpointing
    ) -> Tuple[nn.Module, List[float]]:
        """Build and train the network (no cache): (model in eval mode, the loss of every step).
        ``checkpointing``: train's ``resume``, ``checkpoint``, ``save_every``, ``stop_after``."""
        from .train import train_classifier, train_denoiser

        device = get_device() if device is None else check_device(device)
        model = self.build(device)
        common = dict(
            steps=self.steps,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=self.seed,
            warmup=self.warmup,
            progress=progress,
            config={"name": self.name, **self.config()},
            **checkpointing,
        )
        data, schedule = self.make_data(device), self.make_schedule()
        if self.trainer == "denoiser":
            losses = train_denoiser(model, data, schedule, p_uncond=self.p_uncond, **common)
        elif self.trainer == "velocity":
            from .flow import train_velocity

            losses = train_velocity(model, data, p_uncond=self.p_uncond, **common)
        elif self.trainer == "student":
            from .flow import train_student

            teacher = trained(self.teacher, self.budget, device, progress=progress)
            model.load_state_dict(teacher.state_dict(), strict=False)  # start from the teacher
            losses = train_student(
                model, teacher, data, gamma_range=tuple(self.gamma_range), **common
            )
        else:
            losses = train_classifier(model, data, schedule, **common)
        return model.eval(), losses


CAPTION_COPIES = 8  # captions per training digit in "digit-captions" (chapter 10)


def _model_class(name: str):
    """A network class of diffcourse.models, or of diffcourse.conditioned (chapter 10); None if
    neither has ``name``."""
    from . import conditioned

    return getattr(models, name, None) or getattr(conditioned, name, None)


def _condition_data(kind: str, device: torch.device):
    """Chapter 10's training data: (x0, condition) pairs. "digit-captions": every training digit
    ``CAPTION_COPIES`` times, each copy with a caption true of its label drawn by
    :func:`~diffcourse.text.random_captions` (seed 0), as token ids; "digits-low": every training
    digit with its 4x4 block means (:func:`~diffcourse.conditioned.low_resolution`)."""
    from .conditioned import low_resolution
    from .text import random_captions, tokenize

    split = datasets.load_digits_split(holdout=0.25, seed=0)
    x, y = split.x_train, split.y_train
    if kind == "digits-low":
        return x.to(device), low_resolution(x).to(device)
    labels = y.repeat(CAPTION_COPIES)
    captions = random_captions(labels, torch.Generator().manual_seed(0))
    return x.repeat(CAPTION_COPIES, 1, 1, 1).to(device), tokenize(captions, device=device)


# ---- the labs' recipes ----------------------------------------------------------------------------


def _specs(pick: Callable[[Any, Any], Any]) -> Dict[str, Dict[str, Any]]:
    """Every recipe's settings, with ``pick(quick, full)`` for the sizes that grow with the budget.
    Each reproduces its lab's settings exactly."""
    mlp = dict(dim=2, T=200, hidden=pick(128, 256), depth=4)
    two_d = dict(
        schedule=("cosine", 200),
        model="MLPDenoiser",
        trainer="denoiser",
        steps=pick(3000, 20000),
        batch_size=512,
        lr=3e-3,
    )
    unet = dict(
        data="digits",
        schedule=("linear", 1000),
        model="UNet",
        trainer="denoiser",
        batch_size=128,
        lr=1e-3,
        model_args=dict(channels=1, size=8, T=1000, num_classes=10, width=pick(32, 64)),
    )
    specs = {
        "ch1-denoiser": dict(
            two_d,
            data="two_moons",
            model_args=mlp,
            batch_size=pick(256, 512),
            description="chapter 1: the unconditional denoiser of the two moons",
        ),
        "ch2-weak": dict(
            two_d,
            data="checkerboard",
            p_uncond=0.0,
            model_args=dict(mlp, num_classes=2, label_pathway="output"),
            description="chapter 2: the checkerboard's conditional denoiser whose label only shifts the output",
        ),
        "ch2-strong": dict(
            two_d,
            data="checkerboard",
            p_uncond=0.0,
            model_args=dict(mlp, num_classes=2, label_pathway="layers"),
            description="chapter 2: the checkerboard's conditional denoiser with the label in every layer",
        ),
        "ch4-denoiser": dict(
            two_d,
            data="three_blobs",
            model_args=mlp,
            description="chapter 4: the unconditional denoiser of the three blobs",
        ),
        "ch4-classifier": dict(
            two_d,
            data="three_blobs",
            model="MLPClassifier",
            trainer="classifier",
            steps=pick(2000, 10000),
            seed=1,
            model_args=dict(dim=2, T=200, num_classes=3, hidden=128, depth=3),
            description="chapter 4: the noise-aware classifier of the three blobs",
        ),
        "ch7-judge": dict(
            data="digits-judge",
            schedule=None,
            model="ConvClassifier",
            trainer="classifier",
            steps=600,
            batch_size=128,
            lr=2e-3,
            model_args=dict(channels=1, size=8, num_classes=10, width=32, T=None),
            description="chapter 7: the evaluation classifier of clean digits (the judge), trained without the floor set",
        ),
        "ch7-unet": dict(
            unet,
            # quick: 900 steps at lr 2e-3 fit the digits as well as 1,200 at 1e-3, in lab 7's time
            steps=pick(900, 6000),
            lr=pick(2e-3, 1e-3),
            description="chapter 7: the well-trained class-conditional U-Net (p_uncond 0.1)",
        ),
        "ch7-unet-short": dict(
            unet,
            steps=175,
            description="chapter 7: the deliberately short-trained U-Net (175 steps at every budget)",
        ),
        "ch12-unet": dict(
            unet,
            data="digits_mixture",
            steps=pick(200, 6000),
            description="chapter 12: chapter 7's U-Net trained on draws from digits_mixture(), "
            "whose exact score is known",
        ),
        "ch7-guide": dict(
            data="digits",
            schedule=("linear", 1000),
            model="ConvClassifier",
            trainer="classifier",
            steps=pick(800, 6000),
            batch_size=128,
            lr=2e-3,
            init_seed=1,
            seed=1,
            model_args=dict(channels=1, size=8, num_classes=10, width=32, T=1000),
            description="chapter 7: the noise-aware classifier of digits, for classifier guidance",
        ),
    }
    conditioned = dict(
        schedule=("linear", 1000), trainer="denoiser", batch_size=128, lr=4e-3, p_uncond=0.1
    )
    specs["ch10-captions"] = dict(
        conditioned,
        data="digit-captions",
        model="CaptionUNet",
        steps=pick(800, 6000),
        model_args=dict(width=pick(16, 32), text_dim=32, text_layers=pick(1, 2)),
        description="chapter 10: the caption-conditioned U-Net (caption dropout 0.1)",
    )
    specs["ch10-superres"] = dict(
        conditioned,
        data="digits-low",
        model="SuperResUNet",
        steps=pick(1000, 6000),
        model_args=dict(width=pick(16, 32)),
        description="chapter 10: the 4x4 -> 8x8 super-resolution U-Net (condition dropout 0.1)",
    )
    velocity = dict(dim=2, hidden=pick(128, 256), depth=4, num_classes=3)
    specs["ch11-velocity"] = dict(
        data="three_blobs",
        schedule=None,
        model="VelocityMLP",
        model_args=velocity,
        trainer="velocity",
        steps=pick(2000, 10000),
        batch_size=512,
        lr=3e-3,
        p_uncond=0.1,
        description="chapter 11: the flow-matching network of the three blobs, condition dropout 0.1",
    )
    specs["ch11-student"] = dict(
        data="three_blobs",
        schedule=None,
        model="VelocityMLP",
        model_args=dict(velocity, guidance_input=True),
        trainer="student",
        teacher="ch11-velocity",
        gamma_range=(0.5, 4.5),
        steps=pick(600, 3000),
        batch_size=512,
        lr=1e-3,
        warmup=50,
        description="chapter 11: ch11-velocity distilled into a student that takes gamma as an input "
        "(trained on gamma in [0.5, 4.5])",
    )
    for p in (0.1, 0.2, 0.5):
        specs[f"ch5-cfg-p{p}"] = dict(
            two_d,
            data="three_blobs",
            p_uncond=p,
            model_args=dict(mlp, num_classes=3),
            description=f"chapter 5: the classifier-free network of the three blobs, "
            f"condition dropout {p}",
        )
    return specs


# the command line's names from before the recipes (the appendix uses them)
ALIASES = {"blobs": "ch4-denoiser", "blobs-cfg": "ch5-cfg-p0.1"}
_OVERRIDABLE = ("steps", "batch_size", "lr", "p_uncond", "init_seed", "seed", "warmup")


def names(aliases: bool = False) -> List[str]:
    """The recipes' names (with ``aliases``, the old command-line names too)."""
    out = list(_specs(lambda quick, full: quick))
    return out + list(ALIASES) if check_bool(aliases, "aliases") else out


def get(name: str, budget: Optional[str] = None, **overrides) -> Recipe:
    """The recipe ``name`` (or an alias) resolved for ``budget`` (default: the current
    :func:`~diffcourse.device.budget`), with ``overrides`` of its training settings (``steps``,
    ``batch_size``, ``lr``, ``p_uncond``, ``init_seed``, ``seed``, ``warmup``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    budget = current_budget() if budget is None else check_choice(budget, "budget", BUDGETS)
    specs = _specs(lambda quick, full: full if budget == "full" else quick)
    canonical = ALIASES.get(name, name)
    if canonical not in specs:
        raise ValueError(f"name must be one of {names(aliases=True)}, got {name!r}")
    spec = dict(specs[canonical])
    for key, value in overrides.items():
        if key not in _OVERRIDABLE:
            raise TypeError(f"{key} is not a setting a recipe overrides (one of {_OVERRIDABLE})")
        if value is not None or key == "p_uncond":
            spec[key] = value  # checked by Recipe
    recipe = Recipe(name=canonical, budget=budget, **spec)
    shift = seed_shift()  # 0 unless a run checks the labs against other training seeds
    if shift:
        recipe = dataclasses.replace(
            recipe, init_seed=recipe.init_seed + shift, seed=recipe.seed + shift
        )
    return recipe


def seed_shift() -> int:
    """``DIFFCOURSE_SEED_SHIFT`` (default 0), added by :func:`get` to every recipe's ``init_seed`` and
    ``seed``. With 1, 2, ... every network trains from other seeds, so a run of the labs checks that
    their claims do not hang on one training run: on another CPU the same seeds train slightly
    different networks (floating-point sums run in another order)."""
    value = os.environ.get("DIFFCOURSE_SEED_SHIFT", "").strip()
    if not value:
        return 0
    try:
        shift = int(value)
    except ValueError:
        raise ValueError(f"DIFFCOURSE_SEED_SHIFT must be an int, got {value!r}") from None
    if shift < 0:
        raise ValueError(f"DIFFCOURSE_SEED_SHIFT must be 0 or more, got {shift}")
    return shift


# ---- the cache ------------------------------------------------------------------------------------


class Trained(NamedTuple):
    """What :func:`train_or_load` returns."""

    model: nn.Module
    losses: List[float]  # the loss of every training step
    seconds: float  # how long training took (when it was trained, for a cached model)
    cached: bool  # True when loaded from the cache
    recipe: Recipe

    def describe(self, last: int = 500) -> str:
        """Two short lines for a lab: the network's size, the recipe's steps and where the weights
        came from; the mean training loss (for a denoiser Luo eq. 130's objective without its
        weight) over the last ``last`` steps."""
        last = check_int(last, "last", low=1)
        if len(self.losses) < last:
            raise ValueError(f"last: the run has {len(self.losses)} losses, fewer than {last}")
        size = sum(p.numel() for p in self.model.parameters())
        how = "from the cache" if self.cached else f"trained in {self.seconds:.0f} s"
        loss = sum(self.losses[-last:]) / last
        return (
            f"{self.recipe.name}: {size:,} parameters, {self.recipe.steps:,} steps, {how}\n"
            f"  mean training loss over the last {last:,} steps: {loss:.4f}"
        )


def cache_dir() -> Optional[Path]:
    """The cache folder: ``DIFFCOURSE_CACHE``, else ``~/.cache/diffcourse``; None when it is ``off``."""
    value = os.environ.get("DIFFCOURSE_CACHE", "").strip()
    if value.lower() == "off":
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "diffcourse"


def source_hash() -> str:
    """SHA-256 of the code that training runs (:data:`SOURCES`): of each file's syntax tree, so that
    an edit to a comment, a docstring or the layout keeps the cached weights, and any other edit
    retrains them."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for name in SOURCES:
        h.update(name.encode() + b"\0" + _code_only(root / name).encode() + b"\0")
    return h.hexdigest()


def _code_only(path: Path) -> str:
    """The file's syntax tree without docstrings, as text (the tree holds no comments or layout)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (
            isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def cache_key(recipe: Recipe, device: torch.device) -> Dict[str, Any]:
    """Everything the cached weights depend on."""
    if not isinstance(recipe, Recipe):
        raise TypeError(f"recipe must be a Recipe (see recipes.get), got {type(recipe).__name__}")
    device = check_device(device)
    key = {
        "recipe": recipe.config(),
        "device": device.type,
        "torch": torch.__version__,
        "sources": source_hash(),
    }
    if device.type == "cpu":
        # 1, 2 and 4 threads train the same weights (diffcourse.layers); 3 or 6 may not
        key["threads"] = torch.get_num_threads()
    elif device.type == "cuda":
        key["gpu"] = torch.cuda.get_device_name(device)
    return key


def cache_path(recipe: Recipe, device: torch.device) -> Optional[Path]:
    """Where :func:`trained` keeps this recipe's weights for ``device`` (None: the cache is off)."""
    folder = cache_dir()
    if folder is None:
        return None
    digest = hashlib.sha256(
        json.dumps(cache_key(recipe, device), sort_keys=True).encode()
    ).hexdigest()[:20]
    return folder / f"{recipe.name}-{recipe.budget}-{digest}.pt"


def _load(path: Path, recipe: Recipe, device: torch.device) -> Optional[Trained]:
    """The cached model, or None (with a warning) when the file is damaged or not this recipe's."""
    try:
        check_archive(path, "the file")  # every part's checksum: a flipped bit is not loaded
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - truncated, not a torch file, or holding more than weights
        state, reason = None, "it cannot be read as a weights file, or fails its checksum"
    else:
        reason = None
        if not isinstance(state, dict) or state.get("format") != CACHE_FORMAT:
            reason = "it is not a diffcourse model cache file"
        elif state.get("key") != _plain(cache_key(recipe, device)):
            reason = "it was written for other settings"
    if reason is None:
        try:
            model = recipe.build(device)
            model.load_state_dict(state["model"])
            losses, seconds = [float(v) for v in state["losses"]], float(state["seconds"])
        except Exception:  # noqa: BLE001 - missing entries, or weights of another shape
            reason = "its contents do not fit the recipe"
    if reason is not None:
        warnings.warn(
            f"diffcourse: the cached model {path} is damaged or foreign ({reason}); training it again",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return Trained(model.eval(), losses, seconds, True, recipe)


def _plain(value):
    """Plain JSON types only (torch's version string is a str subclass the weights-only loader refuses)."""
    return json.loads(json.dumps(value))


def _save(path: Path, recipe: Recipe, device: torch.device, result: Trained) -> None:
    """Write the cache file atomically; a failure only warns (the model is trained all the same)."""
    from .train import save_checkpoint

    state = {
        "format": CACHE_FORMAT,
        "key": _plain(cache_key(recipe, device)),
        "model": result.model.state_dict(),
        "losses": result.losses,
        "seconds": result.seconds,
    }
    try:
        save_checkpoint(path, state)
    except (OSError, RuntimeError) as err:  # torch's writer reports a full disk as RuntimeError
        warnings.warn(
            f"diffcourse: could not write the model cache {path} ({err}); the model is trained but "
            "not cached",
            RuntimeWarning,
            stacklevel=3,
        )


def train_or_load(
    name: str,
    budget: Optional[str] = None,
    device=None,
    *,
    cache: bool = True,
    progress: bool = True,
    **overrides,
) -> Trained:
    """The recipe's trained model with its losses: from the cache where it holds this recipe's
    weights for this device, budget, torch and package code, else trained (and cached)."""
    recipe = get(name, budget, **overrides)
    device = get_device() if device is None else check_device(device)
    path = cache_path(recipe, device) if check_bool(cache, "cache") else None
    if path is not None and path.is_file():
        loaded = _load(path, recipe, device)
        if loaded is not None:
            return loaded
    start = time.perf_counter()
    model, losses = recipe.train(device, progress=progress)
    result = Trained(model, losses, time.perf_counter() - start, False, recipe)
    if path is not None:
        _save(path, recipe, device, result)
    return result


def trained(
    name: str,
    budget: Optional[str] = None,
    device=None,
    *,
    cache: bool = True,
    progress: bool = True,
    **overrides,
) -> nn.Module:
    """The trained model of recipe ``name``, on ``device`` (default :func:`get_device`) in eval
    mode: one call, trained once and then loaded from the cache (see :func:`train_or_load`).
    ``budget="quick"`` gets the quick recipe at every budget."""
    return train_or_load(name, budget, device, cache=cache, progress=progress, **overrides).model


def summary(runs: Dict[Any, Trained], last: int = 500) -> List[list]:
    """One row per run of :func:`train_or_load`, as the labs show their networks:
    ``[key, final loss, training seconds, cached]``, the final loss being the mean training loss
    (for a denoiser Luo eq. 130's objective without its weight) over the last ``last`` steps."""
    check_mapping(runs, "runs", "dict key -> Trained", "run", kind=dict)
    last = check_int(last, "last", low=1)
    for key, run in runs.items():
        if not isinstance(run, Trained):
            raise TypeError(f"runs[{key!r}] must be a Trained, got {type(run).__name__}")
        if len(run.losses) < last:
            raise ValueError(f"last: runs[{key!r}] has {len(run.losses)} losses, fewer than {last}")
    return [[k, sum(r.losses[-last:]) / last, r.seconds, r.cached] for k, r in runs.items()]
