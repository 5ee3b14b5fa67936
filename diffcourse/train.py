"""Training: a noise predictor with the simple loss of Ho et al. (2020, Algorithm 1; Luo eq. 130
with its weight dropped), with condition dropout for classifier-free guidance, and a noise-aware
classifier for classifier guidance. Read top to bottom: the two losses the course teaches, the two
trainers that draw their inputs, the one loop they share, then processes, checkpoints and the
command line.

The same loop runs on one device or on several under ``torchrun`` (DistributedDataParallel: NCCL on
GPUs, gloo on CPUs). ``batch_size`` is always the *global* batch: with W processes each takes every
W-th row of it, so W processes and one process see the same examples, times and noise at every step
and reach the same weights (up to float rounding). Checkpoints are written by rank 0 only, atomically,
and resumed exactly. ``python -m diffcourse.train --help`` trains the labs' recipes from the shell.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import pickle
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler

from .checks import (
    _first_line,
    check_archive,
    check_bool,
    check_built_for,
    check_callable,
    check_choice,
    check_device,
    check_generator,
    check_int,
    check_labels,
    check_module,
    check_probability,
    check_real,
    check_tensor,
    sampling_run,
)
from .mixture import GaussianMixture
from .report import progress_bar
from .schedules import Schedule, q_sample

DEFAULT_P_UNCOND = 0.1  # condition dropout for conditional models (Ho & Salimans 2022 used 0.1-0.2)

Data = Union[GaussianMixture, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
State = Dict[str, object]


# ---- the losses the course teaches ------------------------------------------------------------------


def denoiser_loss(
    model: nn.Module,
    x0: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    schedule: Schedule,
    *,
    y: Optional[torch.Tensor] = None,
    drop: Optional[torch.Tensor] = None,
    null_label: Union[int, torch.Tensor, None] = None,
) -> torch.Tensor:
    """The simple loss (Ho et al. 2020, Algorithm 1; Luo eq. 130 without its weight), with condition
    dropout:

        x_t  = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps       (Luo eq. 69)
        y    = null_label where ``drop`` is True                      (Ho & Salimans 2022)
        loss = mean over the batch and the coordinates of (eps_theta(x_t, t, y) - eps)^2

    t uniform over the chain and eps ~ N(0, I) are drawn by the caller; ``y=None`` trains an
    unconditional model. ``y`` is a label per row, or any condition with the batch first (a caption,
    an image, chapter 10); ``null_label`` is then the null condition: an int for class labels, else
    a tensor shaped like ``y`` (the model's ``null_condition(y)``)."""
    check_tensor(x0, "x0", floating=True, nonempty=True)  # a mean over no rows is NaN
    if drop is not None:  # a float mask would fail inside torch.where
        check_tensor(drop, "drop", dtype=torch.bool, shape=(x0.shape[0],), owner="a mask")
    if drop is not None and y is not None and null_label is None:
        raise ValueError("null_label is needed where drop is given: the condition that replaces y")
    x_t = q_sample(x0, t, schedule, eps)
    if y is None:
        eps_hat = model(x_t, t)
    else:
        if drop is not None:
            y = torch.where(drop.view(-1, *[1] * (y.ndim - 1)), null_label, y)
        eps_hat = model(x_t, t, y)
    return torch.mean((eps_hat - eps) ** 2)


def classifier_loss(
    model: nn.Module,
    x0: torch.Tensor,
    y: torch.Tensor,
    *,
    t: Optional[torch.Tensor] = None,
    eps: Optional[torch.Tensor] = None,
    schedule: Optional[Schedule] = None,
) -> torch.Tensor:
    """Cross-entropy of a noise-aware classifier p_phi(y | x_t, t) on x_t from the forward process,
    as guided diffusion trains its classifier (Dhariwal & Nichol 2021); without ``schedule`` on the
    clean x0 (the evaluation classifier of the image metrics, which takes no t). ``y`` holds one
    class in 0..C-1 per row (cross-entropy would read -100 as "ignore this row", and a float y as
    soft labels)."""
    check_tensor(x0, "x0", floating=True, nonempty=True)  # a mean over no rows is NaN
    num_classes = getattr(model, "num_classes", None)
    if num_classes:
        check_labels(y, x0.shape[0], num_classes, x0.device)
    else:
        check_tensor(y, "y", floating=False, shape=(x0.shape[0],))
    logits = model(x0) if schedule is None else model(q_sample(x0, t, schedule, eps), t)
    if not num_classes:  # a classifier that does not say its C: its logits do
        check_labels(y, x0.shape[0], logits.shape[-1], x0.device)
    return nn.functional.cross_entropy(logits, y)


# ---- the two trainers: what each step draws ---------------------------------------------------------


def dropout_rate(p_uncond: Optional[float], conditional: bool) -> float:
    """Condition dropout's rate, checked: ``p_uncond``, or where it is None ``DEFAULT_P_UNCOND``
    for a conditional model and 0 for an unconditional one (which has no null label to drop to)."""
    if p_uncond is None:
        return DEFAULT_P_UNCOND if check_bool(conditional, "conditional") else 0.0
    p_uncond = check_probability(p_uncond, "p_uncond")
    if p_uncond > 0 and not check_bool(conditional, "conditional"):
        raise ValueError("p_uncond > 0 needs a conditional model (num_classes > 0)")
    return p_uncond


def train_denoiser(
    model: nn.Module,
    data: Data,
    schedule: Schedule,
    steps: int,
    *,
    batch_size: int = 512,
    lr: float = 2e-3,
    p_uncond: Optional[float] = None,
    seed: int = 0,
    progress: bool = True,
    warmup: int = 100,
    resume: Optional[State] = None,
    checkpoint: Optional[Union[str, Path]] = None,
    save_every: int = 0,
    stop_after: Optional[int] = None,
    config: Optional[dict] = None,
) -> List[float]:
    """Fit ``model`` (an eps_theta) to ``data`` with :func:`denoiser_loss`; returns the loss of every
    step run (the mean over the batch and the coordinates).

    Args:
        data: a :class:`GaussianMixture` (fresh draws every step), a tensor of x0, or (x0, y).
        batch_size: the global batch, shared out among the processes when run under torchrun.
        p_uncond: chance that a label is replaced by the null label (condition dropout, so that one
            network learns the conditional and the unconditional model, as classifier-free guidance
            needs). Default: 0.1 for a conditional model (Ho & Salimans found 0.1 and 0.2 best,
            0.5 worse), 0 for an unconditional one. Pass 0.0 to train a plain conditional model.
        seed: seeds the data order, the times and the noise (not the initial weights: seed
            ``torch.manual_seed`` before building the model, as :mod:`diffcourse.recipes` does).
        resume: a state from :func:`load_checkpoint`: continue that run where it stopped.
        checkpoint: where to save the state (rank 0, atomically): every ``save_every`` steps and at
            the end. ``stop_after`` ends this call early after that many steps, as an interrupted
            run would, leaving a checkpoint to resume from.
        The other settings are :class:`Settings`'s.
    """
    settings = Settings.of(locals())  # steps, batch_size, lr, ... as passed
    _check_model(model, schedule, settings)
    # a class label (num_classes > 0), or another condition whose null the model gives (chapter 10)
    other_condition = callable(getattr(model, "null_condition", None))
    conditional = getattr(model, "num_classes", 0) > 0 or other_condition
    p_uncond = dropout_rate(p_uncond, conditional)
    if conditional and not other_condition:  # labelled data: 0..C-1 (C, the null label, is not one)
        _check_data_labels(data, getattr(model, "num_classes", None), "model")
    null_label = getattr(model, "null_label", None)
    if p_uncond > 0 and null_label is None and not other_condition:
        raise ValueError(
            "model must have a null_label (the label that means no condition) to train with p_uncond > 0"
        )

    def loss(
        net: nn.Module, x0: torch.Tensor, y: Optional[torch.Tensor], draw: "Draws"
    ) -> torch.Tensor:
        t = draw.steps(schedule.T)  # t ~ U{0, ..., T-1}
        eps = draw.normal(x0)  # eps ~ N(0, I)
        if not conditional:
            return denoiser_loss(net, x0, t, eps, schedule)
        if y is None:
            raise ValueError("data: a conditional model needs labelled data (x0, y)")
        drop = draw.uniform() < p_uncond  # drawn even at p_uncond = 0: one random stream
        null = model.null_condition(y) if other_condition else null_label
        return denoiser_loss(
            net, x0, t, eps, schedule, y=y, drop=drop if p_uncond > 0 else None, null_label=null
        )

    return fit(model, data, loss, settings, resume=resume, desc="training denoiser")


def train_classifier(
    classifier: nn.Module,
    data: Data,
    schedule: Optional[Schedule],
    steps: int,
    *,
    batch_size: int = 512,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
    warmup: int = 100,
    resume: Optional[State] = None,
    checkpoint: Optional[Union[str, Path]] = None,
    save_every: int = 0,
    stop_after: Optional[int] = None,
    config: Optional[dict] = None,
) -> List[float]:
    """Fit a noise-aware classifier p_phi(y | x_t, t) with :func:`classifier_loss` at uniform t;
    ``schedule=None`` trains on the clean data instead (the evaluation classifier of the image
    metrics, which takes no t). The other arguments are :func:`train_denoiser`'s."""
    settings = Settings.of(locals())  # steps, batch_size, lr, ... as passed
    _check_model(classifier, schedule, settings, name="classifier")
    _check_data_labels(data, getattr(classifier, "num_classes", None))

    def loss(
        net: nn.Module, x0: torch.Tensor, y: Optional[torch.Tensor], draw: "Draws"
    ) -> torch.Tensor:
        if y is None:
            raise ValueError("data: a classifier needs labelled data (x0, y)")
        if schedule is None:
            return classifier_loss(net, x0, y)
        t = draw.steps(schedule.T)
        return classifier_loss(net, x0, y, t=t, eps=draw.normal(x0), schedule=schedule)

    return fit(classifier, data, loss, settings, resume=resume, desc="training classifier")


# ---- the loop both share ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How a run trains: ``steps`` of AdamW on global batches of ``batch_size``, the learning rate
    ``lr`` warmed up over ``warmup`` steps then decayed on a cosine, ``seed`` for everything drawn,
    and the checkpointing of :func:`train_denoiser`."""

    steps: int
    batch_size: int = 512
    lr: float = 2e-3
    warmup: int = 100
    seed: int = 0
    progress: bool = True
    checkpoint: Optional[Union[str, Path]] = None
    save_every: int = 0
    stop_after: Optional[int] = None
    config: Optional[dict] = None

    @classmethod
    def of(cls, args: Dict[str, object]) -> "Settings":
        """The settings among a trainer's arguments: ``Settings.of(locals())``, first thing in a
        trainer whose keyword arguments carry the fields' names."""
        return cls(**{f.name: args[f.name] for f in fields(cls)})

    def __post_init__(self):
        check_int(self.steps, "steps", low=1)
        check_int(self.batch_size, "batch_size", low=1)
        check_real(self.lr, "lr", low=0, low_open=True)
        check_int(self.warmup, "warmup", low=1)
        check_int(self.seed, "seed")
        check_bool(self.progress, "progress")
        check_int(self.save_every, "save_every", low=0)
        if self.stop_after is not None:
            check_int(self.stop_after, "stop_after", low=0)
        if self.checkpoint is not None and not isinstance(self.checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a path, got {type(self.checkpoint).__name__}")
        if self.checkpoint is not None:  # refused now, not after the whole run
            path = Path(self.checkpoint)
            if path.is_dir():
                raise ValueError(f"checkpoint {path} is a folder; give a file name in it")
            blocked = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
            if blocked is not None:
                raise ValueError(f"checkpoint {path}: {blocked} is a file, not a folder")
        if self.config is not None and not isinstance(self.config, dict):
            raise TypeError(f"config must be a dict, got {type(self.config).__name__}")
        world = rank_and_world()[1]
        if self.batch_size % world:
            raise ValueError(
                f"batch_size {self.batch_size} must be a multiple of the number of processes ({world})"
            )


def lr_factor(step: int, settings: Settings) -> float:
    """The learning rate's factor at ``step``: a linear warm-up over the first ``warmup`` steps
    times half a cosine from 1 at step 0 down to 0 at ``steps`` (a cheap stand-in for the weight
    averaging of large models that keeps the last steps quiet)."""
    return (
        min(1.0, (step + 1) / settings.warmup)
        * 0.5
        * (1 + math.cos(math.pi * step / settings.steps))
    )


class Draws:
    """The random inputs of a step, drawn from the run's one generator for the whole global batch
    (the same on every rank), of which each rank keeps rows rank, rank + W, ..."""

    def __init__(
        self,
        generator: torch.Generator,
        batch_size: int,
        device: torch.device,
        *,
        rank: int = 0,
        world: int = 1,
    ):
        world = check_int(world, "world", low=1)
        self.generator = check_generator(generator, device=check_device(device))
        self.batch_size, self.device = check_int(batch_size, "batch_size", low=1), device
        self.rank, self.world = check_int(rank, "rank", low=0, high=world - 1), world

    def steps(self, T: int) -> torch.Tensor:
        """t uniform on 0..T-1, one per row."""
        return self.draw((), "int", high=T)

    def normal(self, like: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like a row of ``like``, one per row."""
        return self.draw(tuple(like.shape[1:]), "normal", dtype=like.dtype)

    def uniform(self) -> torch.Tensor:
        """U(0, 1), one per row: condition dropout's coins."""
        return self.draw((), "uniform")

    def draw(
        self, shape: Tuple[int, ...], kind: str, high: int = 0, dtype=torch.float32
    ) -> torch.Tensor:
        """A global batch of ``kind`` ("int": uniform on 0..high-1, "normal", "uniform"), each row of
        ``shape``; this rank's rows."""
        full = (self.batch_size, *shape)
        if check_choice(kind, "kind", ("int", "normal", "uniform")) == "int":
            high = check_int(high, "high", low=1)
            out = torch.randint(0, high, full, generator=self.generator, device=self.device)
        elif kind == "normal":
            out = torch.randn(full, generator=self.generator, device=self.device, dtype=dtype)
        else:
            out = torch.rand(full, generator=self.generator, device=self.device)
        return out[self.rank :: self.world]


Loss = Callable[[nn.Module, torch.Tensor, Optional[torch.Tensor], Draws], torch.Tensor]


def fit(
    model: nn.Module,
    data: Data,
    loss: Loss,
    settings: Settings,
    *,
    resume: Optional[State] = None,
    desc: str = "training",
) -> List[float]:
    """The loop: each step takes this rank's rows (x0, y) of the next global batch, computes
    ``loss(net, x0, y, draws)``, and makes one AdamW step with the gradient clipped to norm 1 and
    the learning rate of :func:`lr_factor`. DDP across processes, a progress bar on rank 0,
    checkpoints (:func:`save_checkpoint`) every ``save_every`` steps and at the end. Returns the
    loss of every step run. The models' range checks of t and y (and a caption model's tokens) run
    at the first step only, since each reads the device: later batches come from the same data (a
    mixture's own labels, or tensors whose labels are checked before training)."""
    _check_data(data)
    check_callable(loss, "loss")
    if not isinstance(settings, Settings):
        raise TypeError(f"settings must be a train.Settings, got {type(settings).__name__}")
    rank, world = rank_and_world()
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    # foreach: one kernel per update for all tensors (PyTorch's default only on GPUs): the same
    # weights bit for bit as the loop over tensors, in a shorter optimizer step
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, settings))
    start = 0 if resume is None else _restore(resume, model, opt, sched, generator, settings.steps)
    end = (
        settings.steps
        if settings.stop_after is None
        else min(settings.steps, start + settings.stop_after)
    )
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    batches = _batches(
        data,
        settings.batch_size,
        generator,
        device,
        dtype,
        rank=rank,
        world=world,
        seed=settings.seed,
        start_step=start,
    )
    draws = Draws(generator, settings.batch_size, device, rank=rank, world=world)

    def save(step: int) -> None:
        if settings.checkpoint is not None:
            save_checkpoint(
                settings.checkpoint,
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "step": step,
                    "generator": generator.get_state(),
                    "config": dict(settings.config or {}),
                },
            )

    losses: List[float] = []
    model.train()
    bar = progress_bar(
        range(start, end),
        desc=desc,
        disable=not settings.progress or rank != 0,
        initial=start,
        total=settings.steps,
    )
    with sampling_run() as run:  # range checks at step 1 only (docstring; t from Draws.steps)
        for i in bar:
            x0, y = next(batches)
            batch_loss = loss(net, x0, y, draws)
            run.first = False
            losses.append(batch_loss.item())
            if not math.isfinite(losses[-1]):  # stop before the step and any save spread it
                raise ValueError(
                    f"{desc}: the loss is {losses[-1]} at step {i + 1}: non-finite data, or a learning "
                    "rate too large for this model (no step taken and nothing saved from it)"
                )
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if (i - start) % 100 == 0:
                # drawn with the bar's next redraw, not as a message of its own (progress_bar)
                recent = losses[-100:]
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", refresh=False)
            if settings.save_every and (i + 1) % settings.save_every == 0 and i + 1 < end:
                save(i + 1)
    save(end)
    model.eval()
    return losses


def _check_model(
    model: nn.Module, schedule: Optional[Schedule], settings: Settings, name: str = "model"
) -> None:
    check_module(model, name)
    if schedule is not None:
        check_built_for(schedule, **{name: model})


def _check_data(data: Data) -> None:
    """A :class:`GaussianMixture`, a floating-point tensor of x0, or a tuple (x0, condition) of
    tensors: anything else fails deep inside the loop (a list has no .shape, integer x0 no noise)."""
    if isinstance(data, GaussianMixture):
        return
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(d, torch.Tensor) for d in data):
            raise TypeError("data must be a GaussianMixture, a tensor of x0 or a tuple (x0, y)")
        data = data[0]
    if not isinstance(data, torch.Tensor):
        raise TypeError(
            "data must be a GaussianMixture, a tensor of x0 or a tuple (x0, y), "
            f"got {type(data).__name__}"
        )
    if not data.is_floating_point():
        raise TypeError(f"data: x0 must be a floating-point tensor, got dtype {data.dtype}")


def _check_data_labels(data: Data, num_classes: Optional[int], owner: str = "classifier") -> None:
    """Labelled tensor data: integer labels in 0..C-1, checked once before training (the loss would
    fail inside torch, or a label of another class, or the null label, would train silently)."""
    if not isinstance(data, tuple) or len(data) != 2 or not isinstance(data[1], torch.Tensor):
        return
    y = data[1]
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise TypeError(f"data: y must be an integer tensor of class labels, got dtype {y.dtype}")
    if num_classes and y.numel():
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= num_classes:
            raise ValueError(
                f"data: y must lie in 0..{num_classes - 1} (the {owner}'s num_classes), "
                f"got labels in {lo}..{hi}"
            )


def _restore(
    resume: State, model: nn.Module, opt, sched, generator: torch.Generator, steps: int
) -> int:
    """Load a checkpoint's state into the run; returns the step it had reached. Everything is
    checked before anything is loaded, so a refused checkpoint leaves the model as it was."""
    _check_state(resume, "resume")
    _check_fits(resume["model"], model.state_dict())
    start = resume["step"]
    if not 0 <= start <= steps:
        raise ValueError(
            f"resume: the checkpoint is at step {start}, outside a run of {steps} steps"
        )
    if resume["generator"].numel() != generator.get_state().numel():
        raise ValueError("resume: its generator state is not one of this run's generator")
    # the optimizer's and scheduler's states are only checked by loading them: keep what the run
    # had, so that a refused checkpoint leaves the model, optimizer and generator as they were
    before = (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        copy.deepcopy(opt.state_dict()),
        copy.deepcopy(sched.state_dict()),
        generator.get_state(),
    )
    try:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"].cpu())  # a ByteTensor on the CPU
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as err:
        model.load_state_dict(before[0])
        opt.load_state_dict(before[1])
        sched.load_state_dict(before[2])
        generator.set_state(before[3])
        raise ValueError(f"resume: the checkpoint's state does not fit this run ({err})") from err
    return start


_STATE_KEYS = ("model", "optimizer", "scheduler", "step", "generator")


def _check_state(state, what: str) -> None:
    """A training state as :func:`fit` saves it: a dict with the model's weights, the optimizer's
    and the scheduler's states (dicts), the step (an int) and the generator's state (a uint8
    tensor)."""
    if not isinstance(state, dict):
        raise TypeError(f"{what} must be a training state (a dict), got {type(state).__name__}")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"{what} is not a diffcourse training checkpoint (missing {missing})")
    for key in ("model", "optimizer", "scheduler"):
        if not isinstance(state[key], dict):
            raise ValueError(f"{what}: its {key!r} must be a dict, got {type(state[key]).__name__}")
    if isinstance(state["step"], bool) or not isinstance(state["step"], int) or state["step"] < 0:
        raise ValueError(f"{what}: its step must be an int >= 0, got {state['step']!r}")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise ValueError(f"{what}: its model weights must all be tensors")
    gen = state["generator"]
    if not isinstance(gen, torch.Tensor) or gen.dtype != torch.uint8:
        raise ValueError(f"{what}: its generator state must be a uint8 tensor")


def _check_fits(stored: Dict[str, torch.Tensor], own: Dict[str, torch.Tensor]) -> None:
    """A checkpoint's weights must be this model's: the same names and shapes (one line naming the
    first difference, instead of load_state_dict's list of every tensor)."""
    if not isinstance(stored, dict):
        raise ValueError("resume: the checkpoint holds no model weights")
    for key in [*own, *stored]:
        if key not in stored or key not in own:
            where = "the model" if key not in own else "the checkpoint"
            raise ValueError(
                f"resume: the checkpoint is of another model: {where} has no weight {key!r}"
            )
        if tuple(stored[key].shape) != tuple(own[key].shape):
            raise ValueError(
                f"resume: the checkpoint is of another model size: {key} is "
                f"{tuple(stored[key].shape)} there and {tuple(own[key].shape)} here"
            )


def _batches(
    data: Data,
    batch_size: int,
    generator: torch.Generator,
    device: torch.device,
    dtype: torch.dtype,
    *,
    rank: int = 0,
    world: int = 1,
    seed: int = 0,
    start_step: int = 0,
):
    """Endless (x0, y) batches, this process's share of each global batch of ``batch_size`` rows.

    A mixture: fresh draws of the whole global batch from the shared ``generator`` (the same on
    every rank), of which this rank keeps rows rank, rank + W, ..., in the model's ``dtype``. A
    tensor data set: epochs of a :class:`~torch.utils.data.DistributedSampler` (shuffled, seeded by
    ``seed`` and the epoch); its shards interleave the same way, so a global batch is the same for
    every W when the data set's size is a multiple of the batch. ``start_step`` skips the batches
    already used (resuming).
    """
    if isinstance(data, GaussianMixture):
        while True:
            x, y = data.sample(batch_size, generator=generator)
            yield x[rank::world].to(device, dtype), y[rank::world].to(device)
    x_all, y_all = data if isinstance(data, tuple) else (data, None)
    if y_all is not None and y_all.shape[0] != x_all.shape[0]:
        raise ValueError("data's x and y must have the same number of rows")
    if x_all.shape[0] == 0:
        raise ValueError("data is empty (0 rows)")
    local = batch_size // world
    sampler = DistributedSampler(
        range(x_all.shape[0]), num_replicas=world, rank=rank, shuffle=True, seed=seed
    )
    per_epoch = len(sampler) // local
    if per_epoch < 1:
        raise ValueError(
            f"batch_size {batch_size} is larger than the data set ({x_all.shape[0]} rows)"
        )
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for k in range(skip, per_epoch):
            idx = order[k * local : (k + 1) * local].to(x_all.device)
            yield x_all[idx].to(device), None if y_all is None else y_all[idx].to(device)
        epoch, skip = epoch + 1, 0


# ---- processes, checkpoints ------------------------------------------------------------------------


def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(path: Union[str, Path], state: State) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file in the same folder, then a rename), so
    that an interrupted save never leaves half a checkpoint. Only rank 0 writes."""
    if not isinstance(state, dict):  # torch.save would write it, and load_checkpoint refuse it
        raise TypeError(f"state must be a dict, got {type(state).__name__}")
    if rank_and_world()[0] != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: writers never collide
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Union[str, Path], map_location=None) -> State:
    """Read a checkpoint written by :func:`save_checkpoint` with ``weights_only=True`` (tensors and
    plain containers only, never arbitrary code). A missing, truncated or foreign file raises a
    ValueError naming the checkpoint."""
    path = Path(path)
    map_location = check_device(map_location, "map_location")  # not blamed on the file below
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    check_archive(path, f"checkpoint {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights_only" in str(err):  # objects beyond tensors and plain containers: not ours
            raise ValueError(
                f"checkpoint {path} is not a diffcourse training checkpoint: it holds objects "
                "other than tensors and plain containers, which are never loaded"
            ) from None
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(err)})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as err:
        raise ValueError(
            f"checkpoint {path} is corrupt or truncated ({_first_line(err)})"
        ) from None
    try:
        _check_state(state, f"checkpoint {path}")
    except TypeError as err:
        raise ValueError(str(err)) from None
    return state


# ---- the command line: the labs' settings, on one device or many ------------------------------------


class UsageError(Exception):
    """A mistake in the command line's arguments: :func:`main` prints it on one line and exits 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage block and no traceback
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


# the settings --resume must find as the checkpoint wrote them: (config key, option), a mismatch
# would change the run (the learning-rate schedule, the batches, the noise)
_RESUMED = (
    ("steps", "--steps"),
    ("batch_size", "--batch-size"),
    ("seed", "--seed"),
    ("init_seed", "--seed"),
)


def _check_resumable(stored: dict, recipe, out: Path) -> None:
    """Refuse to resume a checkpoint into a run whose settings differ from the ones it was written
    with, naming the first setting that differs and both values."""
    wanted = {"name": recipe.name, **recipe.config()}
    for key, option in (("budget", "DIFFCOURSE_BUDGET"), *_RESUMED):
        if key in stored and stored[key] != wanted[key]:
            raise UsageError(
                f"--resume: checkpoint {out} was written with {option} {stored[key]}, this run "
                f"asks for {wanted[key]}; resume with the same setting or write a new --out"
            )
    for key in sorted(set(stored) | set(wanted)):
        if key != "name" and stored.get(key) != wanted.get(key):
            raise UsageError(
                f"--resume: checkpoint {out} was written with {key}={stored.get(key)!r}, this "
                f"recipe has {key}={wanted.get(key)!r}"
            )


def main(argv: Optional[List[str]] = None) -> Path:
    """``python -m diffcourse.train --config NAME [--steps N] [--out PATH] [--resume]``, alone or under
    ``torchrun --nproc_per_node W``: trains a named recipe of :mod:`diffcourse.recipes` (the labs'
    models; ``blobs`` and ``blobs-cfg`` are chapter 4's denoiser and chapter 5's network) and
    returns the checkpoint's path. ``--resume`` continues the run a checkpoint was written by: its
    steps, batch size and seed, unless given (then they must match). A mistake in the arguments
    (a bad value, a missing, corrupt or mismatched checkpoint) prints one line and exits with 2."""
    from . import recipes
    from .device import get_device

    parser = _Parser(prog="python -m diffcourse.train", description=main.__doc__)
    parser.add_argument(
        "--config",
        required=True,
        choices=recipes.names(aliases=True),
        metavar="NAME",
        help="the recipe: " + ", ".join(recipes.names(aliases=True)),
    )
    parser.add_argument(
        "--steps",
        type=_int_at_least(1, ">= 1"),
        help="training steps (default: the recipe's, by budget)",
    )
    parser.add_argument(
        "--batch-size",
        type=_int_at_least(1, ">= 1"),
        help="the global batch (default: the recipe's)",
    )
    parser.add_argument(
        "--out", type=Path, help="checkpoint path (default: checkpoints/<config>.pt)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint at --out"
    )
    parser.add_argument(
        "--save-every",
        type=_int_at_least(0, ">= 0 (0: only at the end)"),
        default=500,
        help="checkpoint every this many steps (0: only at the end)",
    )
    parser.add_argument(
        "--stop-after",
        type=_int_at_least(0, ">= 0"),
        help="stop after this many steps, as if interrupted",
    )
    parser.add_argument(
        "--seed",
        type=int,
        help="seeds both the initial weights and the training (default: the recipe's)",
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    out = args.out or Path("checkpoints") / f"{args.config}.pt"

    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and torch.cuda.is_available() and local >= torch.cuda.device_count():
        parser.error(
            f"--nproc_per_node: process {local} of this node has no GPU of its own "
            f"({torch.cuda.device_count()} found): start one process per GPU, or hide the GPUs "
            "(CUDA_VISIBLE_DEVICES=) to train on the CPU"
        )
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = rank_and_world()[0]
    if torch.cuda.is_available() and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = get_device()
    try:
        try:  # everything the user's arguments decide, before any training
            resume = None
            given = dict(
                steps=args.steps, batch_size=args.batch_size, seed=args.seed, init_seed=args.seed
            )
            if args.resume:
                resume = load_checkpoint(out, map_location=device)
                stored = resume.get("config") or {}
                written_by = stored.get("name")
                if recipes.ALIASES.get(written_by, written_by) != recipes.ALIASES.get(
                    args.config, args.config
                ):
                    raise UsageError(
                        f"--resume: checkpoint {out} was written by config {written_by!r}, "
                        f"not {args.config!r}"
                    )
                for key in given:  # not given: as the checkpoint was written
                    if given[key] is None:
                        given[key] = stored.get(key)
            recipe = recipes.get(args.config, **given)
            if resume is not None:
                _check_resumable(resume.get("config") or {}, recipe, out)
        except (UsageError, ValueError, TypeError) as err:
            parser.exit(2, f"{parser.prog}: error: {err}\n")
        # the recipe seeds the initial weights, the same on every rank
        recipe.train(
            device,
            progress=not args.no_progress,
            resume=resume,
            checkpoint=out,
            save_every=args.save_every,
            stop_after=args.stop_after,
        )
        if rank == 0:
            print(f"checkpoint: {out}")
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
