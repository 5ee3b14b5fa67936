"""Ready-made data for the labs. The 2-D sets are labelled Gaussian mixtures, so every exact
quantity (densities, scores, posteriors, at every noise level) is known. The images are
scikit-learn's bundled 8x8 digits, or MNIST / Fashion-MNIST read from IDX files the reader has."""

from __future__ import annotations

import functools
import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import NamedTuple, Tuple, Union

import numpy as np
import torch

from .checks import check_choice, check_float_dtype, check_int, check_real, check_tensor
from .mixture import GaussianMixture


def three_blobs(
    radius: float = 1.2, std: float = 0.5, dtype: torch.dtype = torch.float32
) -> GaussianMixture:
    """Three classes, one round Gaussian each, centred on a circle: they overlap a little."""
    check_float_dtype(dtype)
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
    check_float_dtype(dtype)
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
    check_float_dtype(dtype)
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


def _to_device(sets: NamedTuple, device) -> NamedTuple:
    """Every tensor of ``sets`` on ``device`` (a torch.device or its name, such as "cuda")."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be a torch.device or a device name, got {device!r}") from err
    return type(sets)(*(v.to(device) for v in sets))


class ImageSplit(NamedTuple):
    """Images [N, C, H, W] in [-1, 1] with labels [N], in a training part and a held-out part."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device) -> "ImageSplit":
        """The split with every tensor on ``device``."""
        return _to_device(self, device)


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


def balanced_rows(y: torch.Tensor, per_class: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` rows of every class 0..C-1 in the labels ``y``, drawn at random with
    ``seed`` and listed class by class: a subset whose class shares are exactly equal. A class with
    fewer than ``per_class`` rows (or none) raises ValueError."""
    check_tensor(y, "y", floating=False, ndim=1)
    per_class, seed = check_int(per_class, "per_class", low=1), check_int(seed, "seed")
    y = y.cpu()
    if y.numel() == 0 or int(y.min()) < 0:
        raise ValueError("y must hold labels 0..C-1, at least one")
    counts = torch.bincount(y)
    if int(counts.min()) < per_class:
        raise ValueError(
            f"per_class must be at most the smallest class's count, {int(counts.min())}, got {per_class}"
        )
    gen = torch.Generator().manual_seed(seed)
    rows = [torch.nonzero(y == c)[:, 0] for c in range(counts.numel())]
    return torch.cat([r[torch.randperm(len(r), generator=gen)[:per_class]] for r in rows])


class DigitsSets(NamedTuple):
    """The digits' sets behind chapter 7's image metrics (:func:`digits_eval_sets`)."""

    x_judge: (
        torch.Tensor
    )  # the training split less the floor set: what the evaluation classifier learns
    y_judge: torch.Tensor
    x_floor: (
        torch.Tensor
    )  # floor_per_class training digits of every class, never shown to that classifier
    y_floor: torch.Tensor
    x_ref: (
        torch.Tensor
    )  # the held-out split cut to equal class counts: the reference of the metrics
    y_ref: torch.Tensor

    def to(self, device) -> "DigitsSets":
        """The sets with every tensor on ``device``."""
        return _to_device(self, device)


def digits_eval_sets(floor_per_class: int = 50, seed: int = 0) -> DigitsSets:
    """Chapter 7's sets for judging samples of the digits of :func:`load_digits_split` (its default split).

    In an evaluation classifier's features the Fréchet distance responds first to class proportions,
    and the classifier maps the images it was trained on more tightly than new ones. So the **floor**
    set is ``floor_per_class`` training digits of every class that the classifier never sees (it
    trains on ``x_judge``, the rest), and the **reference** is the held-out split with every class cut
    to the count of its smallest one. Denoisers still train on the whole training split: the floor
    only needs real digits that are independent of the reference and unseen by the judge."""
    floor_per_class, seed = (
        check_int(floor_per_class, "floor_per_class", low=1),
        check_int(seed, "seed"),
    )
    split = load_digits_split()
    floor = balanced_rows(split.y_train, floor_per_class, seed)
    keep = torch.ones(len(split.y_train), dtype=torch.bool)
    keep[floor] = False
    ref = balanced_rows(split.y_test, int(torch.bincount(split.y_test).min()), seed)
    return DigitsSets(
        split.x_train[keep],
        split.y_train[keep],
        split.x_train[floor],
        split.y_train[floor],
        split.x_test[ref],
        split.y_test[ref],
    )


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
    except (OSError, EOFError, zlib.error) as err:  # zlib.error: a damaged compressed stream
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


# ---- two attributes per component (chapter 10) ----------------------------------------------------------


class TwoAttributes(NamedTuple):
    """One 2-D mixture labelled three ways. Every component carries a ``position`` (its column) and a
    ``colour``; the three mixtures share means, covariances and weights, so p(x) is the same in all,
    and each gives the exact conditional laws of its labelling: p(x | position), p(x | colour) and
    p(x | position, colour), whose label is :meth:`pair`."""

    position: GaussianMixture
    colour: GaussianMixture
    joint: GaussianMixture

    def pair(self, position: int, colour: int) -> int:
        """The ``joint`` label of a (position, colour) pair."""
        n_pos, n_col = self.position.num_classes, self.colour.num_classes
        position = check_int(position, "position", low=0, high=n_pos - 1)
        colour = check_int(colour, "colour", low=0, high=n_col - 1)
        return position * n_col + colour

    def subset(self, pairs) -> GaussianMixture:
        """The mixture of the components named by ``pairs`` (``joint`` labels, see :meth:`pair`),
        their weights renormalised, as one class: for example p(x | left, not blue) is
        ``subset([pair(left, red), pair(left, green)])``."""
        if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
            raise TypeError("pairs must be a list of joint labels")
        pairs = [check_int(p, "pairs", low=0, high=self.joint.num_classes - 1) for p in pairs]
        if not pairs:
            raise ValueError("pairs must name at least one component")
        j = self.joint
        keep = torch.isin(j.labels, torch.tensor(pairs, device=j.labels.device))
        return GaussianMixture(
            j.means[keep], j.covs[keep], j.weights[keep], torch.zeros_like(j.labels[keep])
        )

    def to(self, device=None, dtype=None) -> "TwoAttributes":
        """The three mixtures on ``device`` and/or in ``dtype``."""
        return TwoAttributes(*(m.to(device=device, dtype=dtype) for m in self))


def attribute_grid(
    size: int = 3,
    spacing: float = 2.0,
    std: float = 0.4,
    colour: str = "rows",
    dtype: torch.dtype = torch.float32,
) -> TwoAttributes:
    """size x size round Gaussians of standard deviation ``std`` on a square grid of step ``spacing``,
    centred on the origin, equal weights. Component (i, j), in column i and row j, has position i and

    - ``colour="rows"``: colour j, its row. Position lives on the first coordinate and colour on the
      second, and p(x) is the product of its two coordinates' laws: the attributes are independent;
    - ``colour="diagonal"``: colour (i + j) mod size, a Latin square. Every (position, colour) pair
      still names one component, but colour is no longer a function of one coordinate.

    Either way p(x) is the same mixture; only the colour labels differ."""
    size = check_int(size, "size", low=2)
    spacing = check_real(spacing, "spacing", low=0, low_open=True)
    std = check_real(std, "std", low=0, low_open=True)
    check_choice(colour, "colour", ("rows", "diagonal"))
    check_float_dtype(dtype)
    coords = (torch.arange(size, dtype=torch.float64) - (size - 1) / 2) * spacing
    i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    i, j = i.flatten(), j.flatten()
    means = torch.stack([coords[i], coords[j]], dim=1).to(dtype)
    covs = ((std**2) * torch.eye(2, dtype=torch.float64).expand(size * size, 2, 2)).to(dtype)
    weights = torch.ones(size * size, dtype=dtype)
    col = j if colour == "rows" else (i + j) % size
    make = lambda labels: GaussianMixture(means, covs, weights, labels)
    return TwoAttributes(make(i), make(col), make(i * size + col))


# ---- the digits as an exact mixture (chapter 12) ------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _fit_digits(components: int, reg_covar: float, holdout: float, seed: int):
    """Per-class fits of scikit-learn's GaussianMixture to the training digits (cached: a fit takes
    about a second and every lab and test asks for the same one)."""
    from sklearn.mixture import GaussianMixture as SklearnMixture

    split = load_digits_split(holdout, seed)
    x = split.x_train.reshape(len(split.y_train), -1).double().numpy()
    y = split.y_train.numpy()
    means, covs, weights, labels = [], [], [], []
    for c in range(10):
        xc = x[y == c]
        fit = SklearnMixture(
            components, covariance_type="full", reg_covar=reg_covar, random_state=seed, max_iter=200
        ).fit(xc)
        means.append(fit.means_)
        covs.append(fit.covariances_)
        weights.append(fit.weights_ * len(xc))  # p(y) p(k | y): the class's share of the data
        labels += [c] * components
    return np.concatenate(means), np.concatenate(covs), np.concatenate(weights), np.array(labels)


def digits_mixture(
    components: int = 2,
    reg_covar: float = 0.03,
    holdout: float = 0.25,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> GaussianMixture:
    """A Gaussian mixture in 64 dimensions fitted to the 8x8 digits, so that every exact quantity of
    the course (scores at every noise level, p(y|x), tilted laws) holds at image dimension.

    The training part of :func:`load_digits_split` (``holdout``, ``seed``), flattened and scaled to
    [-1, 1] as the image labs scale it, is fitted class by class with scikit-learn's
    ``GaussianMixture``: ``components`` components per class, full covariances with ``reg_covar``
    added to their diagonal (pixels that never change in a class would otherwise have zero variance).
    Each component's weight is its class's share of the training digits times its weight within the
    class, so p(y) is the data's class frequency. Component k belongs to class k // components.
    Draws reshape to images with ``x.reshape(-1, 1, 8, 8)``.
    """
    components = check_int(components, "components", low=1, high=20)
    reg_covar = check_real(reg_covar, "reg_covar", low=0, low_open=True)
    # checked here, before the cached fit, whose cache would first fail on an unhashable value
    holdout = check_real(holdout, "holdout", low=0, high=1, low_open=True, high_open=True)
    seed = check_int(seed, "seed")
    check_float_dtype(dtype)  # as every mixture maker: float16 would fail in the Cholesky factors
    means, covs, weights, labels = _fit_digits(components, reg_covar, holdout, seed)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float64)
    covs = as_tensor(covs)
    covs = 0.5 * (covs + covs.transpose(1, 2))  # exactly symmetric in any dtype
    return GaussianMixture(
        as_tensor(means).to(dtype),
        covs.to(dtype),
        as_tensor(weights).to(dtype),
        torch.tensor(labels),
    )


def round_mixture(means, std: float, labels, dtype: torch.dtype = torch.float64) -> GaussianMixture:
    """Equal-weight round Gaussians N(means[k], std^2 I) with component k in class ``labels[k]``: the
    small mixtures chapter 12 builds for one claim each (a chain of narrow Gaussians standing for an
    interval, two modes of one class beside another class, two classes in d dimensions)."""
    try:
        means = torch.as_tensor(means, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"means must be [K, D] numbers, got {type(means).__name__}") from None
    check_float_dtype(dtype)
    if means.ndim != 2:
        raise ValueError(f"means must be [K, D], got shape {tuple(means.shape)}")
    std = check_real(std, "std", low=0, low_open=True)
    k, d = means.shape
    covs = std**2 * torch.eye(d, dtype=torch.float64).expand(k, d, d)
    return GaussianMixture(
        means.to(dtype), covs.to(dtype), torch.ones(k, dtype=dtype), torch.as_tensor(labels)
    )
