"""Denoising networks: eps_theta(x_t, t[, y]).

The 2-D labs use :class:`MLPDenoiser`, a small residual MLP with a sinusoidal time embedding.
With ``num_classes = C`` it also takes a label y in 0..C-1, or the null label C (an extra
embedding row) that stands for "no condition".
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    """Sinusoidal features of t/T at geometric frequencies (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
    angles = (t.float() / T * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


def check_labels(y: Optional[torch.Tensor], n: int, num_classes: int, device: torch.device,
                 allow_null: bool = True) -> torch.Tensor:
    """y as a LongTensor[n] in 0..C-1, or C (the null label) where ``allow_null``; None means the
    null label for every row."""
    if y is None and allow_null:
        return torch.full((n,), num_classes, dtype=torch.long, device=device)
    if not isinstance(y, torch.Tensor) or y.dtype != torch.long:
        raise TypeError("y must be a LongTensor of labels")
    if y.shape != (n,):
        raise ValueError(f"y must have shape ({n},), got {tuple(y.shape)}")
    if y.device != device:
        raise ValueError(f"y is on {y.device} but the model is on {device}")
    top = num_classes if allow_null else num_classes - 1
    if n and (int(y.min()) < 0 or int(y.max()) > top):
        null = f", or be the null label {num_classes}" if allow_null else ""
        raise ValueError(f"y must lie in 0..{num_classes - 1}{null}")
    return y


class MLPDenoiser(nn.Module):
    """eps_theta(x_t, t[, y]) for vectors: ``depth`` hidden layers of width ``hidden``.

    The time embedding is added to every hidden layer, so the network can change its answer with
    the noise level at every depth. With ``num_classes > 0`` the label embedding joins it there
    (``label_pathway="layers"``, the strong pathway), or only shifts the output by a vector that
    depends on (y, t) and not on x (``"output"``, a deliberately weak pathway for chapter 2).
    """

    def __init__(self, dim: int = 2, T: int = 1000, hidden: int = 256, depth: int = 3,
                 num_classes: int = 0, emb_dim: int = 64, label_pathway: str = "layers",
                 out_dim: Optional[int] = None):
        super().__init__()
        if dim < 1 or T < 1 or hidden < 1 or depth < 1 or num_classes < 0:
            raise ValueError("dim, T, hidden and depth must be >= 1 and num_classes >= 0")
        if label_pathway not in ("layers", "output"):
            raise ValueError(f"label_pathway must be 'layers' or 'output', got {label_pathway!r}")
        self.dim, self.T, self.num_classes, self.emb_dim = dim, T, num_classes, emb_dim
        self.label_pathway = label_pathway
        self.time_mlp = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        # Row C of the table is the null label: "no condition" (classifier-free guidance, eq. 170).
        self.label_emb = nn.Embedding(num_classes + 1, hidden) if num_classes else None
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth - 1))
        self.emb_proj = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, out_dim or dim)
        self.label_out = nn.Linear(hidden, out_dim or dim) if num_classes and label_pathway == "output" else None
        self.act = nn.SiLU()

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not isinstance(x_t, torch.Tensor) or x_t.ndim != 2 or x_t.shape[1] != self.dim:
            raise ValueError(f"x_t must have shape [N, {self.dim}], got {tuple(getattr(x_t, 'shape', ()))}")
        w = self.inp.weight
        if x_t.dtype != w.dtype:
            raise TypeError(f"x_t has dtype {x_t.dtype} but the model is {w.dtype}")
        if x_t.device != w.device:
            raise ValueError(f"x_t is on {x_t.device} but the model is on {w.device}")
        n = x_t.shape[0]
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or t.shape != (n,):
            raise ValueError(f"t must be a LongTensor of shape ({n},)")
        if n and (int(t.min()) < 0 or int(t.max()) >= self.T):
            raise ValueError(f"t must lie in 0..{self.T - 1}")
        labels = None
        if self.label_emb is not None:
            labels = check_labels(y, n, self.num_classes, x_t.device)
        elif y is not None:
            raise ValueError("y was given but the model is unconditional (num_classes=0)")
        # The embeddings depend on (t, y) alone; a sampler's batch shares one t, so compute them
        # once per distinct pair and gather: the same numbers, several times faster to sample.
        key = t if labels is None else t * (self.num_classes + 1) + labels
        uniq, inverse = torch.unique(key, return_inverse=True)
        u_t = uniq if labels is None else uniq // (self.num_classes + 1)
        emb_t = self.time_mlp(timestep_embedding(u_t, self.emb_dim, self.T).to(w.dtype))
        label_shift = None
        if labels is None:
            emb = self.act(emb_t)
        else:
            emb_y = self.act(emb_t + self.label_emb(uniq % (self.num_classes + 1)))
            if self.label_out is None:
                emb = emb_y                                      # strong: y reaches every layer
            else:
                emb = self.act(emb_t)                            # weak: the layers never see y,
                label_shift = self.label_out(emb_y)[inverse]     # it only shifts the output
        projs = [proj(emb)[inverse] for proj in self.emb_proj]
        h = self.act(self.inp(x_t) + projs[0])
        for layer, p in zip(self.layers, projs[1:]):
            h = h + self.act(layer(h) + p)                       # residual: easy to train deep and fast
        out = self.out(h)
        return out if label_shift is None else out + label_shift

    def eps_fn(self, y: Optional[torch.Tensor] = None):
        """This network as a sampler's ``eps_fn(x_t, t)``, with the label fixed (None: unconditional)."""
        return lambda x_t, t: self(x_t, t, y)


class MLPClassifier(nn.Module):
    """A noise-aware classifier p_phi(y | x_t, t): the same time-conditioned residual MLP as
    :class:`MLPDenoiser`, with one logit per class. It sees the noisy x_t *and* the step t, since
    classifier guidance (Luo eq. 166) needs grad log p(y | x_t) at every noise level."""

    def __init__(self, dim: int = 2, T: int = 1000, num_classes: int = 2, hidden: int = 128, depth: int = 3,
                 emb_dim: int = 64):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.dim, self.T, self.num_classes = dim, T, num_classes
        self.net = MLPDenoiser(dim=dim, T=T, hidden=hidden, depth=depth, emb_dim=emb_dim, out_dim=num_classes)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Logits [N, C]."""
        return self.net(x_t, t)

    def log_prob(self, x_t: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p_phi(y | x_t, t): [N]."""
        y = check_labels(y, x_t.shape[0], self.num_classes, x_t.device, allow_null=False)
        return torch.log_softmax(self(x_t, t), dim=1).gather(1, y[:, None])[:, 0]
