"""Denoising networks: eps_theta(x_t, t[, y]).

The 2-D labs use :class:`MLPDenoiser`, a small residual MLP with a sinusoidal time embedding;
the image lab uses :class:`UNet`. With ``num_classes = C`` either also takes a label y in 0..C-1,
or the null label C (an extra embedding row) that stands for "no condition". The classifiers
(:class:`MLPClassifier`, :class:`ConvClassifier`) see x_t and t, as classifier guidance needs.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import checks
from .checks import check_bool, check_choice, check_int, check_module, check_steps, check_tensor
from .flow import check_gammas, check_times
from .layers import Conv2d, GroupNorm, Linear


def timestep_embedding(t: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    """Sinusoidal features of t/T at geometric frequencies (Vaswani et al. 2017; Ho et al. 2020)."""
    if check_int(dim, "dim", low=2) % 2:
        raise ValueError(f"dim must be even (a sine and a cosine per frequency), got {dim}")
    check_int(T, "T", low=1)
    check_tensor(t, "t", ndim=1)  # one step per row; [N, 1] would give [N, 2, dim / 2] features
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    angles = (t.float() / T * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def check_labels(
    y: Optional[torch.Tensor],
    n: int,
    num_classes: int,
    device: torch.device,
    allow_null: bool = True,
) -> torch.Tensor:
    """y as a LongTensor[n] in 0..C-1, or C (the null label) where ``allow_null``; None means the
    null label for every row. (:func:`diffcourse.checks.check_labels` with the networks' defaults.)"""
    return checks.check_labels(y, n, num_classes, device, allow_null=allow_null)


class _NullLabel:
    """The null label of a conditional network: ``null_label`` = C, the extra embedding row that
    means "no condition" (classifier-free guidance, eq. 170). The one spelling the package uses."""

    num_classes: int

    @property
    def null_label(self) -> Optional[int]:
        """C for a conditional network, None for an unconditional one."""
        return self.num_classes if self.num_classes else None

    def null_labels(self, n: int, device=None) -> torch.Tensor:
        """A LongTensor of ``n`` null labels (on ``device``, default the network's)."""
        if self.null_label is None:
            raise ValueError(
                "null_labels: the model is unconditional (num_classes=0), it has no null label"
            )
        device = next(self.parameters()).device if device is None else device
        return torch.full(
            (check_int(n, "n", low=0),), self.null_label, dtype=torch.long, device=device
        )


class MLPDenoiser(_NullLabel, nn.Module):
    """eps_theta(x_t, t[, y]) for vectors: ``depth`` hidden layers of width ``hidden``.

    The time embedding is added to every hidden layer, so the network can change its answer with
    the noise level at every depth. With ``num_classes > 0`` the label embedding joins it there
    (``label_pathway="layers"``, the strong pathway), or only shifts the output by a vector that
    depends on (y, t) and not on x (``"output"``, a deliberately weak pathway for chapter 2).
    With a label it predicts the noise of each step p_theta(x_{t-1} | x_t, y) of the conditional
    chain p(x_{0:T} | y) (Luo 2022 eq. 162).
    """

    def __init__(
        self,
        dim: int = 2,
        T: int = 1000,
        hidden: int = 256,
        depth: int = 3,
        num_classes: int = 0,
        emb_dim: int = 64,
        label_pathway: str = "layers",
        out_dim: Optional[int] = None,
    ):
        super().__init__()
        dim, T, hidden, depth = (
            check_int(v, k, low=1)
            for k, v in (("dim", dim), ("T", T), ("hidden", hidden), ("depth", depth))
        )
        num_classes = check_int(num_classes, "num_classes", low=0)
        emb_dim = check_int(emb_dim, "emb_dim", low=2)
        if emb_dim % 2:
            raise ValueError(f"emb_dim must be even (sine and cosine features), got {emb_dim}")
        if out_dim is not None:
            out_dim = check_int(out_dim, "out_dim", low=1)
        check_choice(label_pathway, "label_pathway", ("layers", "output"))
        self.dim, self.T, self.num_classes, self.emb_dim = dim, T, num_classes, emb_dim
        self.label_pathway = label_pathway
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        # Row C of the table is the null label: "no condition" (classifier-free guidance, eq. 170).
        self.label_emb = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.emb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, out_dim or dim)
        self.label_out = (
            nn.Linear(hidden, out_dim or dim) if num_classes and label_pathway == "output" else None
        )
        self.act = nn.SiLU()

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        w = self.inp.weight
        check_tensor(
            x_t, "x_t", floating=True, shape=(None, self.dim), dtype=w.dtype, device=w.device
        )
        n = x_t.shape[0]
        check_steps(t, n, self.T)
        labels = None
        if self.label_emb is not None:
            labels = check_labels(
                y, n, self.num_classes, x_t.device
            )  # None: null_label for every row
        elif y is not None:
            raise ValueError("y was given but the model is unconditional (num_classes=0)")
        # The embeddings depend on (t, y) alone; a sampler's batch shares one t, so on the CPU they
        # are computed once per distinct pair and gathered: the same numbers, several times faster
        # to sample. On a GPU, torch.unique would wait for the device (its output size depends on
        # the data), so there every row computes its own.
        key = t if labels is None else t * (self.num_classes + 1) + labels
        if key.device.type == "cpu":
            uniq, inverse = torch.unique(key, return_inverse=True)
        else:
            uniq, inverse = key, None
        # Rows are gathered with an embedding lookup, not v[inverse]: on the CPU the backward of
        # advanced indexing accumulates in an order that changes from run to run with several
        # threads (weights differed by ~1e-7), while the embedding's backward is deterministic.
        rows = (lambda v: v) if inverse is None else (lambda v: F.embedding(inverse, v))  # noqa: E731
        u_t = uniq if labels is None else uniq // (self.num_classes + 1)
        emb_t = self.time_mlp(timestep_embedding(u_t, self.emb_dim, self.T).to(w.dtype))
        label_shift = None
        if labels is None:
            emb = self.act(emb_t)
        else:
            emb_y = self.act(emb_t + self.label_emb(uniq % (self.num_classes + 1)))
            if self.label_out is None:
                emb = emb_y  # strong: y reaches every layer
            else:
                emb = self.act(emb_t)  # weak: the layers never see y,
                label_shift = rows(self.label_out(emb_y))  # it only shifts the output
        projs = [rows(proj(emb)) for proj in self.emb_proj]
        h = self.act(self.inp(x_t) + projs[0])
        for layer, p in zip(self.layers, projs[1:]):
            h = h + self.act(layer(h) + p)  # residual: easy to train deep and fast
        out = self.out(h)
        return out if label_shift is None else out + label_shift

    def eps_fn(self, y: Optional[torch.Tensor] = None):
        """This network as a sampler's ``eps_fn(x_t, t)``, with the label fixed (None: unconditional)."""
        return lambda x_t, t: self(x_t, t, y)


class MLPClassifier(nn.Module):
    """A noise-aware classifier p_phi(y | x_t, t): the same time-conditioned residual MLP as
    :class:`MLPDenoiser`, with one logit per class. It sees the noisy x_t *and* the step t, since
    classifier guidance (Luo eq. 166) needs grad log p(y | x_t) at every noise level."""

    def __init__(
        self,
        dim: int = 2,
        T: int = 1000,
        num_classes: int = 2,
        hidden: int = 128,
        depth: int = 3,
        emb_dim: int = 64,
    ):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", low=2)
        self.dim, self.T, self.num_classes = dim, T, num_classes
        self.net = MLPDenoiser(
            dim=dim, T=T, hidden=hidden, depth=depth, emb_dim=emb_dim, out_dim=num_classes
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits [N, C]."""
        return self.net(x_t, t)

    def log_prob(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p_phi(y | x_t, t): [N]."""
        y = check_labels(y, x_t.shape[0], self.num_classes, x_t.device, allow_null=False)
        return torch.log_softmax(self(x_t, t), dim=1).gather(1, y[:, None])[:, 0]


# ---- images ------------------------------------------------------------------------------------------


def _check_images(
    x: torch.Tensor, shape: Sequence[int], weight: torch.Tensor, name: str = "x_t"
) -> None:
    check_tensor(
        x, name, floating=True, shape=(None, *shape), dtype=weight.dtype, device=weight.device
    )


def _any_nonzero(t: torch.Tensor) -> bool:
    if checks.values_checked_already() or t.device.type == "meta" or not t.numel():
        return False
    return bool(checks.read_values((t != 0).any()))


def _check_mults(mults, width: int, skips: bool = False) -> tuple:
    """The channel multipliers of the levels; every level's channels (width * mult) must suit a
    GroupNorm of min(8, channels) groups: fewer than 8, or a multiple of 8. With ``skips`` (a
    U-Net) twice each too: the way up normalises a level's channels concatenated with its skip."""
    if isinstance(mults, (str, bytes)) or not hasattr(mults, "__iter__"):
        raise TypeError(f"mults must be a sequence of ints, got {type(mults).__name__}")
    mults = tuple(check_int(m, "mults", low=1) for m in mults)
    if not mults:
        raise ValueError("mults must not be empty")
    for c in (width * m * k for m in mults for k in ((1, 2) if skips else (1,))):
        if c > 8 and c % 8:
            twice = " (and twice each, the skips' concatenation)" if skips else ""
            raise ValueError(
                f"width * mults{twice} must each be below 8 or a multiple of 8 (GroupNorm "
                f"groups), got width={width}, mults={mults}"
            )
    return mults


class ResBlock(nn.Module):
    """Two 3x3 convolutions with a skip; the (t, y) embedding shifts every channel in between
    (Ho et al. 2020's block, without attention: 8x8 images are too small to need it)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        c_in, c_out = check_int(c_in, "c_in", low=1), check_int(c_out, "c_out", low=1)
        emb_dim = check_int(emb_dim, "emb_dim", low=0)
        self.norm1, self.conv1 = (
            GroupNorm(min(8, c_in), c_in),
            Conv2d(c_in, c_out, 3, padding=1),
        )
        self.norm2, self.conv2 = (
            GroupNorm(min(8, c_out), c_out),
            Conv2d(c_out, c_out, 3, padding=1),
        )
        self.emb = nn.Linear(emb_dim, c_out) if emb_dim else None
        self.skip = Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, emb: Optional[torch.Tensor]) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(self.act(self.norm2(h)))


class _Embedding(nn.Module):
    """The conditioning vector of a U-Net block: an MLP of the sinusoidal time features, plus a learned
    row per label whose last row (index C) is the null label."""

    def __init__(self, T: int, dim: int, num_classes: int):
        super().__init__()
        self.T, self.dim, self.num_classes = T, dim, num_classes
        self.time = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(num_classes + 1, dim) if num_classes else None

    def forward(
        self, t: torch.Tensor, y: Optional[torch.Tensor], dtype: torch.dtype
    ) -> torch.Tensor:
        emb = self.time(timestep_embedding(t, self.dim, self.T).to(dtype))
        return emb if self.label is None else emb + self.label(y)


class UNet(_NullLabel, nn.Module):
    """eps_theta(x_t, t[, y]) for images [N, channels, size, size]: a small U-Net (Ronneberger et al.
    2015, as Ho et al. 2020 use it). One :class:`ResBlock` per level on the way down, halving the size
    after each but the last, one in the middle, one per level on the way up on the concatenated skip.

    Level i has ``width * mults[i]`` channels (the input convolution gives ``width``; the labs pick
    ``width`` by budget); with ``num_classes = C`` the label embedding has a row C for the null
    label.
    """

    def __init__(
        self,
        channels: int = 1,
        size: int = 8,
        T: int = 1000,
        num_classes: int = 0,
        width: int = 32,
        mults: Sequence[int] = (1, 2),
    ):
        super().__init__()
        channels, size, T, width = (
            check_int(v, k, low=1)
            for k, v in (("channels", channels), ("size", size), ("T", T), ("width", width))
        )
        num_classes = check_int(num_classes, "num_classes", low=0)
        mults = _check_mults(mults, width, skips=True)
        if size % 2 ** (len(mults) - 1):
            raise ValueError(
                f"size {size} must be divisible by 2^(len(mults) - 1) = {2 ** (len(mults) - 1)}"
            )
        self.channels, self.size, self.T, self.num_classes = channels, size, T, num_classes
        widths = [width * m for m in mults]
        emb_dim = 4 * width
        self.embed = _Embedding(T, emb_dim, num_classes)
        self.inp = Conv2d(channels, width, 3, padding=1)
        self.down = nn.ModuleList(
            ResBlock(c_in, c, emb_dim) for c_in, c in zip([width] + widths, widths)
        )
        self.pool = nn.ModuleList(Conv2d(c, c, 3, stride=2, padding=1) for c in widths[:-1])
        self.mid = ResBlock(widths[-1], widths[-1], emb_dim)
        ups = list(reversed(widths))
        self.up = nn.ModuleList(
            ResBlock(2 * c, c, emb_dim) for c in ups
        )  # input: h and the skip, c each
        self.unpool = nn.ModuleList(
            nn.Sequential(nn.Upsample(scale_factor=2), Conv2d(c, c_next, 3, padding=1))
            for c, c_next in zip(ups[:-1], ups[1:])
        )
        self.out = nn.Sequential(
            GroupNorm(min(8, width), width), nn.SiLU(), Conv2d(width, channels, 3, padding=1)
        )

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        _check_images(x_t, (self.channels, self.size, self.size), self.inp.weight)
        check_steps(t, x_t.shape[0], self.T)
        if self.num_classes:
            y = check_labels(y, x_t.shape[0], self.num_classes, x_t.device)
        elif y is not None:
            raise ValueError("y was given but the model is unconditional (num_classes=0)")
        return self._trunk(self.inp(x_t), self.embed(t, y, x_t.dtype))

    def _trunk(
        self,
        h: torch.Tensor,
        emb: torch.Tensor,
        attend: Optional[Callable[[int, torch.Tensor], torch.Tensor]] = None,
    ) -> torch.Tensor:
        """Down, middle, up (each level's skip concatenated), out, from the input features ``h``.
        ``attend(k, h)``, where given, rewrites the features after the middle block (k = 0) and after
        the last up block (k = 1): where chapter 10's networks read their condition."""
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.pool):
                h = self.pool[i](h)
        h = self.mid(h, emb)
        if attend is not None:
            h = attend(0, h)
        for i, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.unpool):
                h = self.unpool[i](h)
        if attend is not None:
            h = attend(1, h)
        return self.out(h)

    def eps_fn(self, y: Optional[torch.Tensor] = None):
        """This network as a sampler's ``eps_fn(x_t, t)``, with the label fixed (None: unconditional)."""
        return lambda x_t, t: self(x_t, t, y)


class ConvClassifier(nn.Module):
    """A small convolutional classifier of images: the down half of :class:`UNet`, global average
    pooling, then a hidden layer (the **features** that the image metrics compare) and the logits.

    With ``T`` set it is noise-aware, p_phi(y | x_t, t) for classifier guidance (Luo eq. 166); with
    ``T=None`` it sees clean images only: the evaluation classifier of the image metrics.
    """

    def __init__(
        self,
        channels: int = 1,
        size: int = 8,
        num_classes: int = 10,
        width: int = 32,
        mults: Sequence[int] = (1, 2),
        T: Optional[int] = 1000,
        features: int = 64,
    ):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", low=2)
        channels, size, width, features = (
            check_int(v, k, low=1)
            for k, v in (
                ("channels", channels),
                ("size", size),
                ("width", width),
                ("features", features),
            )
        )
        T = None if T is None else check_int(T, "T", low=1)
        mults = _check_mults(mults, width)
        self.channels, self.size, self.num_classes, self.T = channels, size, num_classes, T
        widths = [width * m for m in mults]
        emb_dim = 4 * width if T is not None else 0
        self.embed = _Embedding(T, emb_dim, 0) if T is not None else None
        self.inp = Conv2d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResBlock(c_in, c, emb_dim) for c_in, c in zip([width] + widths, widths)
        )
        self.pool = nn.ModuleList(Conv2d(c, c, 3, stride=2, padding=1) for c in widths[:-1])
        self.hidden = nn.Sequential(
            GroupNorm(min(8, widths[-1]), widths[-1]),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            Linear(widths[-1], features),
            nn.SiLU(),
        )
        self.head = Linear(features, num_classes)

    def features(self, x_t: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The penultimate layer [N, features]."""
        _check_images(x_t, (self.channels, self.size, self.size), self.inp.weight)
        emb = None
        if self.embed is not None:
            check_steps(t, x_t.shape[0], self.T)
            emb = self.embed(t, None, x_t.dtype)
        elif t is not None and _any_nonzero(check_tensor(t, "t", floating=False)):
            raise ValueError(
                "t: this classifier sees clean images only (T=None): t must be None or 0"
            )
        h = self.inp(x_t)
        for i, block in enumerate(self.blocks):
            h = block(h, emb)
            if i < len(self.pool):
                h = self.pool[i](h)
        return self.hidden(h)

    def forward(self, x_t: torch.Tensor, t: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Logits [N, C]."""
        return self.head(self.features(x_t, t))

    def log_prob(
        self, x_t: torch.Tensor, t: Optional[torch.Tensor], y: torch.Tensor
    ) -> torch.Tensor:
        """log p_phi(y | x_t, t): [N]."""
        y = check_labels(y, x_t.shape[0], self.num_classes, x_t.device, allow_null=False)
        return torch.log_softmax(self(x_t, t), dim=1).gather(1, y[:, None])[:, 0]


# ---- flow matching (chapter 11) ----------------------------------------------------------------------


class VelocityMLP(_NullLabel, nn.Module):
    """v_theta(x_t, t[, y][, gamma]) for the rectified-flow path of chapter 11: :class:`MLPDenoiser`'s
    residual MLP with the time a float ``t`` in [0, 1] (t = 1 the noise) instead of a step.

    The sinusoidal features of 1000 t feed a small MLP, as a step's features do in MLPDenoiser; a
    label embedding (row C the null label) is added to it when ``num_classes > 0``. With
    ``guidance_input=True`` the guidance scale ``gamma`` [N] is one more input, embedded the same
    way (the features of gamma itself, not of 1000 gamma, through an MLP of its own) and added too
    (its last layer starts at zero, so the gamma input starts with no effect): the student of
    guidance distillation (Meng et al. 2023), which is what FLUX-dev's "guidance" input is.
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: int = 256,
        depth: int = 3,
        num_classes: int = 0,
        emb_dim: int = 64,
        guidance_input: bool = False,
    ):
        super().__init__()
        dim, hidden, depth = (
            check_int(v, k, low=1) for k, v in (("dim", dim), ("hidden", hidden), ("depth", depth))
        )
        num_classes = check_int(num_classes, "num_classes", low=0)
        emb_dim = check_int(emb_dim, "emb_dim", low=2)
        if emb_dim % 2:
            raise ValueError(f"emb_dim must be even (sine and cosine features), got {emb_dim}")
        check_bool(guidance_input, "guidance_input")
        self.dim, self.num_classes, self.emb_dim, self.guidance_input = (
            dim,
            num_classes,
            emb_dim,
            guidance_input,
        )
        self.time_mlp = nn.Sequential(
            nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )
        self.label_emb = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.gamma_mlp = None
        if guidance_input:
            self.gamma_mlp = nn.Sequential(
                nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
            )
            # zero at the start: a student loaded with a teacher's weights begins as the teacher's
            # conditional velocity at every gamma, and training adds what gamma changes
            nn.init.zeros_(self.gamma_mlp[2].weight)
            nn.init.zeros_(self.gamma_mlp[2].bias)
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.emb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.act = nn.SiLU()

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        y: Optional[torch.Tensor] = None,
        gamma: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        w = self.inp.weight
        check_tensor(
            x_t, "x_t", floating=True, shape=(None, self.dim), dtype=w.dtype, device=w.device
        )
        n = x_t.shape[0]
        keys = [check_times(t, n).to(w.device, torch.float64)]
        if self.label_emb is not None:
            keys.append(
                check_labels(y, n, self.num_classes, x_t.device).double()
            )  # None: the null label
        elif y is not None:
            raise ValueError("y was given but the model is unconditional (num_classes=0)")
        if self.gamma_mlp is not None:
            if gamma is None:
                raise TypeError(
                    "gamma must be a floating-point tensor [N] for a model with a guidance input"
                )
            keys.append(check_gammas(gamma, n).to(w.device, torch.float64))
        elif gamma is not None:
            raise ValueError(
                "gamma was given but the model has no guidance input (guidance_input=False)"
            )
        # The embeddings depend on (t, y, gamma) alone: computed once per distinct row, then gathered.
        uniq, inverse = torch.unique(torch.stack(keys, 1), dim=0, return_inverse=True)
        emb = self.time_mlp(timestep_embedding(uniq[:, 0], self.emb_dim, 1).to(w.dtype))
        if self.label_emb is not None:
            emb = emb + self.label_emb(uniq[:, 1].long())
        if self.gamma_mlp is not None:
            emb = emb + self.gamma_mlp(
                timestep_embedding(uniq[:, -1], self.emb_dim, 1000).to(w.dtype)
            )
        emb = self.act(emb)
        projs = [proj(emb)[inverse] for proj in self.emb_proj]
        h = self.act(self.inp(x_t) + projs[0])
        for layer, p in zip(self.layers, projs[1:]):
            h = h + self.act(layer(h) + p)
        return self.out(h)

    def v_fn(self, y: Optional[torch.Tensor] = None):
        """This network as a sampler's ``v_fn(x_t, t)``, the label fixed (None: the null label)."""
        if self.gamma_mlp is not None:
            raise ValueError(
                "a model with a guidance input needs gamma: use flow.student_velocity_fn"
            )
        return lambda x_t, t: self(x_t, t, y)


def flat_eps_fn(model: nn.Module, y: Optional[int] = None):
    """An image denoiser as a noise predictor on flat vectors: ``eps_fn(x_t [N, C*H*W], t)`` reshapes
    to the model's images, asks it with one fixed class ``y`` (None: the null label) under no_grad,
    and flattens back. So a U-Net is held against a mixture's exact ``eps`` in the mixture's own
    coordinates (chapter 12)."""
    check_module(model)
    shape = (getattr(model, "channels", 1), getattr(model, "size", 8), getattr(model, "size", 8))
    if y is not None:  # an int class, not 2.7 or True read as one
        y = check_int(y, "y", low=0, high=getattr(model, "num_classes", 1) - 1)

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        check_tensor(x_t, "x_t", shape=(None, math.prod(shape)))  # else reshape makes more images
        labels = (
            model.null_labels(len(x_t), x_t.device)
            if y is None
            else torch.full((len(x_t),), int(y), dtype=torch.long, device=x_t.device)
        )
        with torch.no_grad():
            return model(x_t.reshape(-1, *shape), t, labels).reshape(x_t.shape)

    return eps_fn
