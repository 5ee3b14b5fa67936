"""Training a noise predictor with the simple loss E ||eps - eps_theta(x_t, t[, y])||^2 (Luo eq. 130;
Ho et al. 2020, Algorithm 1), t uniform over the chain; and a noise-aware classifier.

The same loops run on one device or on several under ``torchrun`` (DistributedDataParallel: NCCL on
GPUs, gloo on CPUs). ``batch_size`` is always the *global* batch: with W processes each takes every
W-th row of it, so W processes and one process see the same examples, times and noise at every step
and reach the same weights (up to float rounding). Checkpoints are written by rank 0 only, atomically,
and resumed exactly. ``python -m diffcourse.train --help`` runs the labs' settings from the shell.
"""
from __future__ import annotations

import argparse
import math
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from .checks import check_int, check_module, check_probability, check_real, check_schedule
from .mixture import GaussianMixture
from .schedules import Schedule, q_sample

DEFAULT_P_UNCOND = 0.1   # condition dropout for conditional models (Ho & Salimans 2022 used 0.1-0.2)

Data = Union[GaussianMixture, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]
State = Dict[str, object]


# ---- processes, checkpoints ------------------------------------------------------------------------

def rank_and_world() -> Tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def save_checkpoint(path: Union[str, Path], state: State) -> None:
    """Write ``state`` to ``path`` atomically (a temporary file in the same folder, then a rename), so
    that an interrupted save never leaves half a checkpoint. Only rank 0 writes."""
    if rank_and_world()[0] != 0:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")      # one per process: writers never collide
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
    if not path.is_file():
        raise ValueError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as err:
        raise ValueError(f"checkpoint {path} is corrupt or truncated: {err}") from None
    missing = {"model", "optimizer", "scheduler", "step", "generator"} - set(state if isinstance(state, dict) else ())
    if missing:
        raise ValueError(f"checkpoint {path} is not a diffcourse training checkpoint (missing {sorted(missing)})")
    return state


# ---- the shared loop ---------------------------------------------------------------------------------

def _batches(data: Data, batch_size: int, generator: torch.Generator, device: torch.device,
             rank: int, world: int, seed: int, start_step: int):
    """Endless (x0, y) batches, this process's share of each global batch of ``batch_size`` rows.

    A mixture: fresh draws of the whole global batch from the shared ``generator`` (the same on
    every rank), of which this rank keeps rows rank, rank + W, ... A tensor data set: epochs of a
    :class:`~torch.utils.data.DistributedSampler` (shuffled, seeded by ``seed`` and the epoch); its
    shards interleave the same way, so a global batch is the same for every W when the data set's
    size is a multiple of the batch. ``start_step`` skips the batches already used (resuming).
    """
    if isinstance(data, GaussianMixture):
        while True:
            x, y = data.sample(batch_size, generator=generator)
            yield x[rank::world].to(device, torch.float32), y[rank::world].to(device)
    x_all, y_all = data if isinstance(data, tuple) else (data, None)
    if y_all is not None and y_all.shape[0] != x_all.shape[0]:
        raise ValueError("data's x and y must have the same number of rows")
    local = batch_size // world
    sampler = DistributedSampler(range(x_all.shape[0]), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    per_epoch = len(sampler) // local
    if per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} is larger than the data set ({x_all.shape[0]} rows)")
    epoch, skip = divmod(start_step, per_epoch)
    while True:
        sampler.set_epoch(epoch)
        order = torch.tensor(list(sampler))
        for k in range(skip, per_epoch):
            idx = order[k * local:(k + 1) * local].to(x_all.device)
            yield x_all[idx].to(device), None if y_all is None else y_all[idx].to(device)
        epoch, skip = epoch + 1, 0


def _check_common(model: nn.Module, schedule: Optional[Schedule], steps: int, batch_size: int) -> None:
    check_module(model)
    if schedule is not None:
        check_schedule(schedule)
    check_int(steps, "steps", low=1)
    check_int(batch_size, "batch_size", low=1)
    world = rank_and_world()[1]
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the number of processes ({world})")
    if schedule is not None and getattr(model, "T", schedule.T) != schedule.T:
        raise ValueError(f"the model was built for T={model.T} but the schedule has T={schedule.T}")


def _train(model: nn.Module, data: Data, schedule: Schedule, steps: int, batch_size: int, lr: float,
           seed: int, progress: bool, warmup: int, desc: str,
           make_loss: Callable[[nn.Module, Callable, Callable], Callable[[], torch.Tensor]],
           resume: Optional[State], checkpoint: Optional[Union[str, Path]], save_every: int,
           stop_after: Optional[int], config: Optional[dict]) -> List[float]:
    """The loop both trainers share: AdamW, warm-up then cosine decay of the learning rate (a cheap
    stand-in for the weight averaging of large models that keeps the last steps quiet), gradient
    clipping, a progress bar on rank 0, DDP across processes, checkpoints.

    ``make_loss(net, next_batch, draw)`` returns ``batch_loss()``; ``next_batch()`` gives this rank's
    (x0, y) and ``draw(shape, kind)`` draws a global batch of times, noise or dropout coins from the
    shared generator and returns this rank's rows."""
    rank, world = rank_and_world()
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        gen.set_state(resume["generator"])
        start = int(resume["step"])
        if not 0 <= start <= steps:
            raise ValueError(f"the checkpoint is at step {start}, outside a run of {steps} steps")
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    batches = _batches(data, batch_size, gen, device, rank, world, seed, start)

    def draw(shape, kind: str, high: int = 0, dtype=torch.float32) -> torch.Tensor:
        full = (batch_size, *shape)
        if kind == "int":
            out = torch.randint(0, high, full, generator=gen, device=device)
        elif kind == "normal":
            out = torch.randn(full, generator=gen, device=device, dtype=dtype)
        else:
            out = torch.rand(full, generator=gen, device=device)
        return out[rank::world]

    batch_loss = make_loss(net, lambda: next(batches), draw)
    end = steps if stop_after is None else min(steps, start + stop_after)

    def save(step: int) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                         "scheduler": sched.state_dict(), "step": step,
                                         "generator": gen.get_state(), "config": dict(config or {})})

    losses: List[float] = []
    model.train()
    bar = tqdm(range(start, end), desc=desc, disable=not progress or rank != 0, initial=start, total=steps)
    for i in bar:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (i - start) % 100 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
        if save_every and (i + 1) % save_every == 0 and i + 1 < end:
            save(i + 1)
    save(end)
    model.eval()
    return losses


# ---- the two trainers ------------------------------------------------------------------------------

def train_denoiser(model: nn.Module, data: Data, schedule: Schedule, steps: int, batch_size: int = 512,
                   lr: float = 2e-3, p_uncond: Optional[float] = None, seed: int = 0, progress: bool = True,
                   warmup: int = 100, resume: Optional[State] = None, checkpoint: Optional[Union[str, Path]] = None,
                   save_every: int = 0, stop_after: Optional[int] = None, config: Optional[dict] = None,
                   ) -> List[float]:
    """Fit ``model`` (an eps_theta) to ``data``; returns the loss of every step run (the mean over the
    batch and the coordinates).

    Args:
        data: a :class:`GaussianMixture` (fresh draws every step), a tensor of x0, or (x0, y).
        batch_size: the global batch, shared out among the processes when run under torchrun.
        p_uncond: chance that a label is replaced by the null label (condition dropout, so that one
            network learns the conditional and the unconditional model, as classifier-free guidance
            needs). Default: 0.1 for a conditional model (Ho & Salimans found 0.1 and 0.2 best,
            0.5 worse), 0 for an unconditional one. Pass 0.0 to train a plain conditional model.
        seed: seeds the data order, the times and the noise (not the initial weights: seed
            ``torch.manual_seed`` before building the model).
        resume: a state from :func:`load_checkpoint`: continue that run where it stopped.
        checkpoint: where to save the state (rank 0, atomically): every ``save_every`` steps and at
            the end. ``stop_after`` ends this call early after that many steps, as an interrupted
            run would, leaving a checkpoint to resume from.
    """
    _check_common(model, schedule, steps, batch_size)
    conditional = getattr(model, "num_classes", 0) > 0
    if p_uncond is None:
        p_uncond = DEFAULT_P_UNCOND if conditional else 0.0
    p_uncond = check_probability(p_uncond, "p_uncond")
    if p_uncond > 0 and not conditional:
        raise ValueError("p_uncond > 0 needs a conditional model (num_classes > 0)")
    if p_uncond > 0 and getattr(model, "null_label", None) is None:
        raise ValueError("model must have a null_label (the label that means no condition) to train with p_uncond > 0")

    def make_loss(net, next_batch, draw):
        def batch_loss() -> torch.Tensor:
            x0, y = next_batch()
            t = draw((), "int", high=schedule.T)
            eps = draw(tuple(x0.shape[1:]), "normal", dtype=x0.dtype)
            x_t = q_sample(x0, t, schedule, eps)
            if conditional:
                if y is None:
                    raise ValueError("a conditional model needs labelled data")
                drop = draw((), "uniform") < p_uncond
                eps_hat = net(x_t, t, torch.where(drop, model.null_label, y))
            else:
                eps_hat = net(x_t, t)
            return torch.mean((eps_hat - eps) ** 2)
        return batch_loss

    return _train(model, data, schedule, steps, batch_size, lr, seed, progress, warmup, "training denoiser",
                  make_loss, resume, checkpoint, save_every, stop_after, config)


def train_classifier(classifier: nn.Module, data: Data, schedule: Optional[Schedule], steps: int, batch_size: int = 512,
                     lr: float = 2e-3, seed: int = 0, progress: bool = True, warmup: int = 100,
                     resume: Optional[State] = None, checkpoint: Optional[Union[str, Path]] = None,
                     save_every: int = 0, stop_after: Optional[int] = None, config: Optional[dict] = None,
                     ) -> List[float]:
    """Fit a noise-aware classifier p_phi(y | x_t, t) by cross-entropy on x_t drawn from the forward
    process at uniform t, as guided diffusion trains its classifier (Dhariwal & Nichol 2021).
    ``schedule=None`` trains on the clean data instead (the evaluation classifier of the image
    metrics, which takes no t). The other arguments are :func:`train_denoiser`'s."""
    _check_common(classifier, schedule, steps, batch_size)

    def make_loss(net, next_batch, draw):
        def batch_loss() -> torch.Tensor:
            x0, y = next_batch()
            if y is None:
                raise ValueError("a classifier needs labelled data")
            if schedule is None:
                return nn.functional.cross_entropy(net(x0), y)
            t = draw((), "int", high=schedule.T)
            x_t = q_sample(x0, t, schedule, draw(tuple(x0.shape[1:]), "normal", dtype=x0.dtype))
            return nn.functional.cross_entropy(net(x_t, t), y)
        return batch_loss

    return _train(classifier, data, schedule, steps, batch_size, lr, seed, progress, warmup, "training classifier",
                  make_loss, resume, checkpoint, save_every, stop_after, config)


# ---- the command line: the labs' settings, on one device or many ------------------------------------

def main(argv: Optional[List[str]] = None) -> Path:
    """``python -m diffcourse.train --config NAME [--steps N] [--out PATH] [--resume]``, alone or under
    ``torchrun --nproc_per_node W``: trains a named recipe of :mod:`diffcourse.recipes` (the labs'
    models; ``blobs`` and ``blobs-cfg`` are chapter 4's denoiser and chapter 5's network) and
    returns the checkpoint's path."""
    from . import recipes
    from .device import get_device

    parser = argparse.ArgumentParser(prog="python -m diffcourse.train", description=main.__doc__)
    parser.add_argument("--config", required=True, choices=recipes.names(aliases=True), metavar="NAME",
                        help="the recipe: " + ", ".join(recipes.names(aliases=True)))
    parser.add_argument("--steps", type=int, help="training steps (default: the recipe's, by budget)")
    parser.add_argument("--batch-size", type=int, help="the global batch (default: the recipe's)")
    parser.add_argument("--out", type=Path, help="checkpoint path (default: checkpoints/<config>.pt)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    parser.add_argument("--save-every", type=int, default=500, help="checkpoint every this many steps")
    parser.add_argument("--stop-after", type=int, help="stop after this many steps, as if interrupted")
    parser.add_argument("--seed", type=int, help="seeds both the initial weights and the training (default: the recipe's)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    recipe = recipes.get(args.config, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                         init_seed=args.seed)
    out = args.out or Path("checkpoints") / f"{args.config}.pt"

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    rank = rank_and_world()[0]
    if torch.cuda.is_available() and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = get_device()
    try:
        resume = None
        if args.resume:
            resume = load_checkpoint(out, map_location=device)
            written_by = resume.get("config", {}).get("name")
            if recipes.ALIASES.get(written_by, written_by) != recipe.name:
                raise ValueError(f"checkpoint {out} was written by config {written_by!r}, not {args.config!r}")
        # the recipe seeds the initial weights, the same on every rank
        recipe.train(device, progress=not args.no_progress, resume=resume, checkpoint=out,
                     save_every=args.save_every, stop_after=args.stop_after)
        if rank == 0:
            print(f"checkpoint: {out}")
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return out


if __name__ == "__main__":
    main()
