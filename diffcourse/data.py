"""Ready-made data for the labs. The 2-D sets are labelled Gaussian mixtures, so every exact
quantity (densities, scores, posteriors, at every noise level) is known. The images are
scikit-learn's bundled 8x8 digits, or MNIST / Fashion-MNIST read from IDX files the reader has."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path
from typing import NamedTuple, Tuple, Union

import numpy as np
import torch

from .checks import check_choice, check_int, check_real
from .mixture import GaussianMixture


def three_blobs(
    radius: float = 1.2, std: float = 0.5, dtype: torch.dtype = torch.float32
) -> GaussianMixture:
    """Three classes, one round Gaussian each, centred on a circle: they overlap a little."""
    radius = check_real(radius, "radius", low=0)
    std = check_real(std, "std", low=0, low_open=True)
    angles = torch.tensor([90.0, 210.0, 330.0], dtype=torch.float64) * math.pi / 180
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    return GaussianMixture(
        means.to(dtype), covs.to(dtype), torch.ones(3, dtype=dtype), torch.arange(3)
    )


def two_moons(
    components: int = 16, std: float = 0.1, dtype: torch.dtype = torch.float32
) -> GaussianMixture:
    """Two interleaved half-circles, each class a chain of ``components`` small Gaussians:
    a sharp, curved shape whose exact score is still known. Centred near the origin."""
    components = check_int(components, "components", low=1)
    std = check_real(std, "std", low=0, low_open=True)
    theta = torch.linspace(0, math.pi, components, dtype=torch.float64)
    upper = torch.stack([torch.cos(theta), torch.sin(theta)], dim=1)
    lower = torch.stack([1 - torch.cos(theta), 0.5 - torch.sin(theta)], dim=1)
    means = torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(2 * components, 2, 2)
    labels = torch.arange(2).repeat_interleave(components)
    return GaussianMixture(
        means.to(dtype), covs.to(dtype), torch.ones(2 * components, dtype=dtype), labels
    )


def checkerboard(
    cells: int = 3, spacing: float = 0.9, std: float = 0.15, dtype: torch.dtype = torch.float32
) -> GaussianMixture:
    """A cells x cells grid of small Gaussians whose class alternates like a chessboard's squares:
    both classes cover the same region, so p(y|x) changes on the scale of one square."""
    cells = check_int(cells, "cells", low=2)
    spacing = check_real(spacing, "spacing", low=0, low_open=True)
    std = check_real(std, "std", low=0, low_open=True)
    coords = (torch.arange(cells, dtype=torch.float64) - (cells - 1) / 2) * spacing
    i, j = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
    means = torch.stack([coords[i.flatten()], coords[j.flatten()]], dim=1)
    covs = (std**2) * torch.eye(2, dtype=torch.float64).expand(cells * cells, 2, 2)
    labels = (i + j).flatten() % 2
    return GaussianMixture(
        means.to(dtype), covs.to(dtype), torch.ones(cells * cells, dtype=dtype), labels
    )


# ---- images ------------------------------------------------------------------------------------------


class ImageSplit(NamedTuple):
    """Images [N, C, H, W] in [-1, 1] with labels [N], in a training part and a held-out part."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits_split(holdout: float = 0.25, seed: int = 0) -> ImageSplit:
    """scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes, no download),
    scaled from 0..16 to [-1, 1] and split at random, with a fixed ``seed``, into a training part and
    a ``holdout`` share kept apart for the metrics."""
    from sklearn.datasets import load_digits

    holdout = check_real(holdout, "holdout", low=0, high=1, low_open=True, high_open=True)
    seed = check_int(seed, "seed")
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32)[:, None] / 8 - 1
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = round(holdout * len(y))
    test, train = order[:n_test], order[n_test:]
    return ImageSplit(x[train], y[train], x[test], y[test])


# IDX (LeCun's MNIST format): two zero bytes, a type code, the number of dimensions, each dimension as
# a big-endian int32, then the values in row-major order, big-endian.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Union[str, Path]) -> torch.Tensor:
    """Read one IDX file (``.gz`` or not) into a tensor of its shape. A missing file raises
    FileNotFoundError; a malformed, truncated or over-long one ValueError, both naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {path} does not exist")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ValueError(f"IDX file {path} is not a readable gzip file: {err}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] < 1:
        raise ValueError(f"IDX file {path} does not start with an IDX header")
    ndim, dtype = raw[3], np.dtype(_IDX_TYPES[raw[2]])
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"IDX file {path} is truncated inside its header")
    shape = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
    expected = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"IDX file {path} holds {len(raw)} bytes, but its header {shape} needs {expected}: "
            "truncated or corrupt"
        )
    values = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="))).clone()


def load_mnist(folder: Union[str, Path], split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
    """MNIST or Fashion-MNIST (the same file names) from the standard IDX files in ``folder``, for
    readers who have them: images [N, 1, 28, 28] scaled to [-1, 1], labels [N]. Nothing is downloaded."""
    check_choice(split, "split", ("train", "test"))
    stem = "train" if split == "train" else "t10k"

    def find(name: str) -> Path:
        for candidate in (Path(folder) / name, Path(folder) / (name + ".gz")):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"folder {folder} has neither {name} nor {name}.gz")

    images, labels = (
        read_idx(find(f"{stem}-images-idx3-ubyte")),
        read_idx(find(f"{stem}-labels-idx1-ubyte")),
    )
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"folder {folder}: images {tuple(images.shape)} and labels {tuple(labels.shape)} "
            "do not match"
        )
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) <= 9:
        raise ValueError(f"folder {folder}: labels must lie in 0..9")
    return images[:, None].float() / 127.5 - 1, labels.long()
