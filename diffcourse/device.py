"""Where the course runs: the device and the compute budget.

Every lab calls :func:`get_device` once and :func:`budget` once; nothing else in the
package chooses a device (tensors follow their inputs).
"""
from __future__ import annotations

import os

import torch

BUDGETS = ("quick", "full")


def get_device() -> torch.device:
    """CUDA when present, else Apple's MPS, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
