"""Where the course runs: the device and the compute budget.

Every lab calls :func:`get_device` once and :func:`budget` once; nothing else in the
package chooses a device (tensors follow their inputs).
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Optional, Tuple, TypeVar

import torch

from .checks import check_bool, check_callable, check_device

R = TypeVar("R")

BUDGETS = ("quick", "full")


def get_device(announce: bool = False) -> torch.device:
    """CUDA when present, else the CPU.

    Apple's MPS is never chosen: it has no float64, in which labs 3 and 12 check Bayes' rule and
    guidance far below float32's rounding, and the labs have not been run on it. Tensors moved
    there by hand still work with the package's functions, which follow their inputs.

    ``announce=True`` also prints the device and the labs' :func:`budget`, as each lab's first cell
    does, so a reader sees at once what the run will do.
    """
    check_bool(announce, "announce")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if announce:
        print(f"device: {device}, budget: {budget()}")
    return device


def budget() -> str:
    """The compute budget of the labs: ``"quick"`` or ``"full"``.

    ``"full"`` where a GPU is present, else ``"quick"``; the environment variable
    ``DIFFCOURSE_BUDGET`` overrides either way. Every check in a lab holds at both.
    """
    value = os.environ.get("DIFFCOURSE_BUDGET", "").strip().lower()
    if value:
        if value not in BUDGETS:
            raise ValueError(f"DIFFCOURSE_BUDGET must be one of {BUDGETS}, got {value!r}")
        return value
    return "full" if get_device().type != "cpu" else "quick"


def pick(quick, full):
    """The value for the current budget: ``pick(3000, 20000)`` reads as a table row."""
    return full if budget() == "full" else quick


def synchronize(device: Optional[torch.device] = None) -> None:
    """Wait until ``device`` (default :func:`get_device`) has finished its queued work. GPUs run
    asynchronously: without this a timer measures how fast work is queued, not how fast it runs."""
    device = check_device(device) or get_device()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class Timer:
    """What :func:`timer` yields: ``seconds`` is set when the block ends."""

    seconds: float = float("nan")


@contextmanager
def timer(device: Optional[torch.device] = None) -> Iterator[Timer]:
    """Time a block on ``device``, waiting for it before and after::

    with timer() as clock:
        x = ddim_sample(...)
    print(clock.seconds)
    """
    device = check_device(device) or get_device()
    clock = Timer()
    synchronize(device)
    start = time.perf_counter()
    try:
        yield clock
    finally:
        synchronize(device)
        clock.seconds = time.perf_counter() - start


@contextmanager
def full_precision() -> Iterator[None]:
    """Float32 as written, inside the block. On an NVIDIA GPU PyTorch lets cuDNN's convolutions
    round their inputs to TensorFloat-32 (10 bits of mantissa) by default, so one network gives
    answers about 1e-3 apart at two batch sizes: a check that two ways of computing one formula
    agree to float rounding runs in here. Settings are put back on exit; a CPU's arithmetic does not
    read them."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def timed(fn: Callable[[], R], device: Optional[torch.device] = None) -> Tuple[float, R]:
    """(seconds, result) of one call of ``fn``, device-synchronised (see :func:`timer`)."""
    check_callable(fn, "fn")
    with timer(device) as clock:
        result = fn()
    return clock.seconds, result
