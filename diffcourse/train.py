"""Training a noise predictor with the simple loss E ||eps - eps_theta(x_t, t[, y])||^2 (Luo eq. 130;
Ho et al. 2020, Algorithm 1), t uniform over the chain."""
from __future__ import annotations

import math
from typing import List, Optional, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from .mixture import GaussianMixture
from .schedules import Schedule, q_sample

DEFAULT_P_UNCOND = 0.1   # condition dropout for conditional models (Ho & Salimans 2022 used 0.1-0.2)

Data = Union[GaussianMixture, torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _batches(data: Data, batch_size: int, generator: torch.Generator, device: torch.device):
    """Endless (x0, y) batches: fresh draws from a mixture, or random rows of a tensor data set."""
    if isinstance(data, GaussianMixture):
        while True:
            x, y = data.sample(batch_size, generator=generator)
            yield x.to(device, torch.float32), y.to(device)
    x_all, y_all = data if isinstance(data, tuple) else (data, None)
    if y_all is not None and y_all.shape[0] != x_all.shape[0]:
        raise ValueError("data's x and y must have the same number of rows")
    while True:
        idx = torch.randint(0, x_all.shape[0], (batch_size,), generator=generator, device=generator.device)
        idx = idx.to(x_all.device)
        yield x_all[idx].to(device), None if y_all is None else y_all[idx].to(device)


def _optimise(model: nn.Module, batch_loss, steps: int, lr: float, warmup: int, progress: bool,
              desc: str) -> List[float]:
    """The loop both trainers share: AdamW, warm-up then cosine decay of the learning rate (a cheap
    stand-in for the weight averaging of large models that keeps the last steps quiet), gradient
    clipping, a progress bar. ``batch_loss()`` draws a batch and returns its loss."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min(1.0, (i + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * i / steps)))
    losses: List[float] = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for i in bar:
        loss = batch_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if i % 100 == 0:
            bar.set_postfix(loss=f"{sum(losses[-100:]) / len(losses[-100:]):.4f}")
    model.eval()
    return losses


def _check_common(model: nn.Module, schedule: Schedule, steps: int, batch_size: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if getattr(model, "T", schedule.T) != schedule.T:
        raise ValueError(f"the model was built for T={model.T} but the schedule has T={schedule.T}")


def train_denoiser(model: nn.Module, data: Data, schedule: Schedule, steps: int, batch_size: int = 512,
                   lr: float = 2e-3, p_uncond: Optional[float] = None, seed: int = 0, progress: bool = True,
                   warmup: int = 100) -> List[float]:
    """Fit ``model`` (an eps_theta) to ``data``; returns the loss of every step (the mean over the
    batch and the coordinates).

    Args:
        data: a :class:`GaussianMixture` (fresh draws every step), a tensor of x0, or (x0, y).
        p_uncond: chance that a label is replaced by the null label (condition dropout, so that one
            network learns the conditional and the unconditional model, as classifier-free guidance
            needs). Default: 0.1 for a conditional model (Ho & Salimans found 0.1 and 0.2 best,
            0.5 worse), 0 for an unconditional one. Pass 0.0 to train a plain conditional model.
        seed: seeds the data order, the times and the noise (not the initial weights: seed
            ``torch.manual_seed`` before building the model).
    """
    _check_common(model, schedule, steps, batch_size)
    conditional = getattr(model, "num_classes", 0) > 0
    if p_uncond is None:
        p_uncond = DEFAULT_P_UNCOND if conditional else 0.0
    if isinstance(p_uncond, bool) or not isinstance(p_uncond, (int, float)) or not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond!r}")
    if p_uncond > 0 and not conditional:
        raise ValueError("p_uncond > 0 needs a conditional model (num_classes > 0)")
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = _batches(data, batch_size, gen, device)

    def batch_loss() -> torch.Tensor:
        x0, y = next(batches)
        t = torch.randint(0, schedule.T, (batch_size,), generator=gen, device=device)
        eps = torch.randn(x0.shape, generator=gen, device=device, dtype=x0.dtype)
        x_t = q_sample(x0, t, schedule, eps)
        if conditional:
            if y is None:
                raise ValueError("a conditional model needs labelled data")
            drop = torch.rand(batch_size, generator=gen, device=device) < p_uncond
            eps_hat = model(x_t, t, torch.where(drop, model.num_classes, y))
        else:
            eps_hat = model(x_t, t)
        return torch.mean((eps_hat - eps) ** 2)

    return _optimise(model, batch_loss, steps, lr, warmup, progress, "training denoiser")


def train_classifier(classifier: nn.Module, data: Data, schedule: Schedule, steps: int, batch_size: int = 512,
                     lr: float = 2e-3, seed: int = 0, progress: bool = True, warmup: int = 100) -> List[float]:
    """Fit a noise-aware classifier p_phi(y | x_t, t) by cross-entropy on x_t drawn from the forward
    process at uniform t, as guided diffusion trains its classifier (Dhariwal & Nichol 2021)."""
    _check_common(classifier, schedule, steps, batch_size)
    device = next(classifier.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    batches = _batches(data, batch_size, gen, device)

    def batch_loss() -> torch.Tensor:
        x0, y = next(batches)
        if y is None:
            raise ValueError("a classifier needs labelled data")
        t = torch.randint(0, schedule.T, (batch_size,), generator=gen, device=device)
        x_t = q_sample(x0, t, schedule, generator=gen)
        return nn.functional.cross_entropy(classifier(x_t, t), y)

    return _optimise(classifier, batch_loss, steps, lr, warmup, progress, "training classifier")
