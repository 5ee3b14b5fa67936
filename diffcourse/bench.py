"""How fast the image lab's pieces run here: ``python -m diffcourse.bench``.

Times training of the chapter 7 U-Net (images per second) and classifier-free guided sampling
(images per second), with both branches in one stacked forward pass (:func:`batched_cfg_eps_fn`)
against two passes (:func:`classifier_free_eps_fn`), on the device :func:`get_device` picks, and
prints a short table. Uses the bundled digits; nothing is downloaded.
"""

from __future__ import annotations

import argparse
from typing import Callable, Dict, List, Optional

import torch

from .checks import check_int, check_real
from .data import load_digits_split
from .device import get_device, timed
from .guidance import batched_cfg_eps_fn, classifier_free_eps_fn
from .models import UNet
from .samplers import ddim_sample
from .schedules import linear_schedule
from .train import train_denoiser


def _timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, waiting for the device to finish its queued work."""
    return timed(fn, device)[0]


def run(
    width: int = 32,
    batch_size: int = 128,
    train_steps: int = 50,
    samples: int = 500,
    sample_steps: int = 25,
    gamma: float = 3.0,
    seed: int = 0,
) -> Dict[str, float]:
    """The measurements as a dict: train / batched / two-pass images per second."""
    for name, value in (
        ("width", width),
        ("batch_size", batch_size),
        ("train_steps", train_steps),
        ("samples", samples),
        ("sample_steps", sample_steps),
    ):
        check_int(value, name, low=1)
    gamma = check_real(gamma, "gamma", low=0)
    device = get_device()
    data = load_digits_split()
    x, y = data.x_train.to(device), data.y_train.to(device)
    schedule = linear_schedule(1000)
    torch.manual_seed(seed)
    model = UNet(num_classes=10, width=width).to(device)
    quiet = dict(batch_size=batch_size, lr=1e-3, seed=seed, progress=False)
    train_denoiser(model, (x, y), schedule, steps=5, **quiet)  # warm-up: kernels, allocator
    train_s = _timed(
        lambda: train_denoiser(model, (x, y), schedule, steps=train_steps, **quiet), device
    )
    labels = torch.arange(samples, device=device) % 10
    null = torch.full_like(labels, model.null_label)
    noise = torch.randn(
        samples, 1, 8, 8, generator=torch.Generator(device=device).manual_seed(seed), device=device
    )
    fns = {
        "batched": batched_cfg_eps_fn(model, labels, gamma),
        "two passes": classifier_free_eps_fn(model.eps_fn(labels), model.eps_fn(null), gamma),
    }
    out = {"train images/s": train_steps * batch_size / train_s}
    for name, fn in fns.items():
        ddim_sample(fn, noise, schedule, steps=2, progress=False)  # warm-up
        seconds = _timed(
            lambda fn=fn: ddim_sample(fn, noise, schedule, steps=sample_steps, progress=False),
            device,
        )
        out[f"sample images/s, {name}"] = samples / seconds
    return out


def main(argv: Optional[List[str]] = None) -> Dict[str, float]:
    parser = argparse.ArgumentParser(
        prog="python -m diffcourse.bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--width", type=int, default=32, help="U-Net channels at 8x8 (the lab: 32 quick, 64 full)"
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--samples", type=int, default=500)
    parser.add_argument("--sample-steps", type=int, default=25, help="DDIM levels per sample")
    parser.add_argument("--gamma", type=float, default=3.0)
    args = parser.parse_args(argv)
    device = get_device()
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{device.type}, {torch.get_num_threads()} threads"
    )
    result = run(
        args.width, args.batch_size, args.train_steps, args.samples, args.sample_steps, args.gamma
    )
    print(
        f"diffcourse bench on {name} (torch {torch.__version__}); U-Net width {args.width}, "
        f"batch {args.batch_size}, {args.samples} samples x {args.sample_steps} DDIM levels at gamma {args.gamma:g}"
    )
    for key, value in result.items():
        print(f"  {key:<32} {value:10.0f}")
    return result


if __name__ == "__main__":
    main()
