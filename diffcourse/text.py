"""Captions as conditions (chapter 10): a tiny caption language over the ten digits, a word-level
tokenizer, a small text encoder and the cross-attention block that lets image features read the
caption's tokens.

The language, in full::

    caption := ""                                  the null caption: no condition
             | clause ("and" clause)*              every clause must hold
    clause  := NUMBER                              "seven"
             | "not" ARTICLE NUMBER                "not a three"
             | ARTICLE [PARITY] "digit" [RANGE]    "an even digit", "a digit above five",
                                                   "an odd digit below four"
    RANGE   := ("above" | "below") NUMBER          strictly above or below
    PARITY  := "even" | "odd";   ARTICLE := "a" | "an";   NUMBER := "zero" ... "nine"

A caption names a set of digits (:func:`caption_digits`): the labels that satisfy it. Training
captions are drawn from the labels (:func:`random_captions`); some combinations are held out of
training (``HELD_OUT``) to measure compositional generalisation.
"""

from __future__ import annotations

from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn import functional as F

from .checks import (
    check_callable,
    check_device,
    check_finite,
    check_generator,
    check_int,
    check_labels,
    check_strs,
    check_tensor,
    read_values,
    same_device,
    values_checked_already,
)
from .layers import GroupNorm, LayerNorm, Linear

NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
PAD, START = 0, 1
VOCAB = (
    "<pad>",
    "<start>",
    "a",
    "an",
    "digit",
    "even",
    "odd",
    "above",
    "below",
    "not",
    "and",
) + NUMBERS
MAX_TOKENS = 12  # <start> and up to 11 words: the longest generated caption has 5
_INDEX = {w: i for i, w in enumerate(VOCAB)}
_DIGITS = frozenset(range(10))

# Range words in the generated captions: "above two" .. "above six", "below three" .. "below seven".
ABOVE = (2, 3, 4, 5, 6)
BELOW = (3, 4, 5, 6, 7)
# Combinations never shown in training; each of their parts is. Training leaves out every caption
# that names the same digits too ("an odd digit above six" is 7 and 9 as well), so that a model
# cannot pass by reading a held-out caption as a training one a number word away.
HELD_OUT = ("an odd digit above five", "an even digit below five")
KINDS = ("name", "parity", "range", "not", "parity and range")
KIND_WEIGHTS = (0.3, 0.15, 0.2, 0.1, 0.25)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _check_caption(caption) -> str:
    if not isinstance(caption, str):
        raise TypeError(f"a caption must be a str, got {type(caption).__name__}")
    return caption


def _words(caption: str) -> List[str]:
    words = _check_caption(caption).split()
    for w in words:
        if w not in _INDEX or w in ("<pad>", "<start>"):
            raise ValueError(
                f"unknown word {w!r} in caption {caption!r}; the vocabulary is "
                f"{', '.join(VOCAB[2:])}"
            )
    return words


# ---- meaning ------------------------------------------------------------------------------------------


def caption_digits(caption: str) -> frozenset:
    """The digits a caption names: the set of labels 0..9 that satisfy it (all ten for the null
    caption ""). A caption outside the language raises ValueError saying where; one that names no
    digit ("an even digit above eight") too."""
    words = _words(caption)
    if not words:
        return _DIGITS
    clauses, current = [], []
    for w in words:
        if w == "and":
            clauses.append(current)
            current = []
        else:
            current.append(w)
    clauses.append(current)
    out = set(_DIGITS)
    for clause in clauses:
        out &= _clause_digits(clause, caption)
    if not out:
        raise ValueError(f"caption {caption!r} names no digit")
    return frozenset(out)


def _number(word: str, caption: str) -> int:
    if word not in NUMBERS:
        raise ValueError(
            f"caption {caption!r}: expected a number word (zero .. nine), got {word!r}"
        )
    return NUMBERS.index(word)


def _clause_digits(clause: List[str], caption: str) -> set:
    bad = ValueError(f"caption {caption!r}: cannot read the clause {' '.join(clause)!r}")
    if len(clause) == 1:
        return {_number(clause[0], caption)}
    if clause and clause[0] == "not":
        if len(clause) != 3 or clause[1] not in ("a", "an"):
            raise bad
        return set(_DIGITS) - {_number(clause[2], caption)}
    if not clause or clause[0] not in ("a", "an"):
        raise bad
    rest, out = clause[1:], set(_DIGITS)
    if rest and rest[0] in ("even", "odd"):
        out = {d for d in out if d % 2 == (rest[0] == "odd")}
        rest = rest[1:]
    if not rest or rest[0] != "digit":
        raise bad
    rest = rest[1:]
    if rest:
        if len(rest) != 2 or rest[0] not in ("above", "below"):
            raise bad
        n = _number(rest[1], caption)
        out = {d for d in out if (d > n if rest[0] == "above" else d < n)}
    return out


def caption_mask(captions: Union[str, Sequence[str]]) -> torch.Tensor:
    """mask[i, d] is True when digit d satisfies caption i: BoolTensor [N, 10]."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    mask = torch.zeros(len(captions), 10, dtype=torch.bool)
    for i, c in enumerate(captions):
        mask[i, sorted(caption_digits(c))] = True
    return mask


# ---- the captions training draws from -------------------------------------------------------------------


def caption_family(kind: str) -> Tuple[str, ...]:
    """Every generated caption of one ``kind`` (see ``KINDS``), held-out ones included."""
    if kind == "name":
        return NUMBERS
    if kind == "parity":
        return ("an even digit", "an odd digit")
    if kind == "range":
        return tuple(f"a digit above {NUMBERS[n]}" for n in ABOVE) + tuple(
            f"a digit below {NUMBERS[n]}" for n in BELOW
        )
    if kind == "not":
        return tuple(f"not {_article(w)} {w}" for w in NUMBERS)
    if kind == "parity and range":
        return tuple(
            f"an {p} digit {r} {NUMBERS[n]}"
            for p in ("even", "odd")
            for r, ns in (("above", ABOVE), ("below", BELOW))
            for n in ns
        )
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def random_captions(
    labels: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    held_out: Sequence[str] = HELD_OUT,
) -> List[str]:
    """One caption per label, true of it: a kind drawn with ``KIND_WEIGHTS``, then a caption of that
    kind that the label satisfies, uniformly, never one of ``held_out`` nor one that names the same
    digits as one of them. Seeded by ``generator``."""
    check_tensor(labels, "labels", floating=False, ndim=1)  # a 1-D integer tensor of digits
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) <= 9:
        raise ValueError("labels must lie in 0..9")
    check_generator(generator)
    held = {caption_digits(c) for c in check_strs(held_out, "held_out")}  # the sets they name
    options = [
        [
            [
                c
                for c in caption_family(k)
                if caption_digits(c) not in held and d in caption_digits(c)
            ]
            for d in range(10)
        ]
        for k in KINDS
    ]
    if any(not kind_options for by_digit in options for kind_options in by_digit):
        raise ValueError("held_out leaves some digit with no caption of some kind")
    n = labels.numel()
    if not n:  # no label, no caption (torch's multinomial refuses to draw none)
        return []
    kinds = torch.multinomial(
        torch.tensor(KIND_WEIGHTS, dtype=torch.float64), n, replacement=True, generator=generator
    ).tolist()
    u = torch.rand(n, generator=generator, dtype=torch.float64).tolist()
    return [
        options[k][d][int(v * len(options[k][d]))]
        for k, d, v in zip(kinds, labels.cpu().tolist(), u)
    ]


# ---- tokens -------------------------------------------------------------------------------------------


def tokenize(
    captions: Union[str, Sequence[str]],
    length: int = MAX_TOKENS,
    device: Optional[torch.device] = None,
) -> torch.Tensor:
    """Word-level token ids [N, length]: ``<start>``, one id per word, then ``<pad>``. The null
    caption "" is ``<start>`` alone. An unknown word raises ValueError naming it and the vocabulary."""
    captions = [captions] if isinstance(captions, str) else list(captions)
    length, device = check_int(length, "length", low=1), check_device(device)
    out = torch.full((len(captions), length), PAD, dtype=torch.long)
    for i, c in enumerate(captions):
        ids = [START] + [_INDEX[w] for w in _words(c)]
        if len(ids) > length:
            raise ValueError(
                f"caption {c!r} has {len(ids) - 1} words; at most {length - 1} fit in length={length}"
            )
        out[i, : len(ids)] = torch.tensor(ids)
    return out if device is None else out.to(device)


def check_tokens(
    tokens: torch.Tensor, n: int, device: torch.device, max_len: int = MAX_TOKENS
) -> torch.Tensor:
    """Token ids [n, L], L <= max_len, each row ``<start>`` then words then padding only."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long:
        raise TypeError("tokens must be a LongTensor of token ids (see diffcourse.text.tokenize)")
    if tokens.ndim != 2 or tokens.shape[0] != n or not 1 <= tokens.shape[1] <= max_len:
        raise ValueError(
            f"tokens must have shape [{n}, L] with 1 <= L <= {max_len}, got {tuple(tokens.shape)}"
        )
    if not same_device(tokens.device, device):  # "cuda" and "cuda:0" are one device
        raise ValueError(f"tokens are on {tokens.device} but the model is on {device}")
    if tokens.numel() and not values_checked_already():
        _check_token_values(tokens)
    return tokens


def _check_token_values(tokens: torch.Tensor) -> None:
    """The values of a non-empty [N, L] LongTensor of ids, read from the device once: ids in the
    vocabulary, each row ``<start>`` then words then padding only."""
    # an id past the vocabulary would be an IndexError in the embedding
    unstarted = (tokens[:, 0] != START).sum()  # a row without <start>: no key to attend
    # a second <start>, or a word after padding: the attention's mask would drop that padding
    # from inside the caption, and the caption read would not be the one written
    stray = (tokens[:, 1:] == START).sum() + (
        (tokens[:, 1:-1] == PAD) & (tokens[:, 2:] != PAD)
    ).sum()
    lo, hi, unstarted, stray = read_values(
        torch.stack([tokens.min(), tokens.max(), unstarted, stray])
    )
    if lo < 0 or hi >= len(VOCAB):
        raise ValueError(f"tokens must be ids in 0..{len(VOCAB) - 1}, got {lo}..{hi}")
    if unstarted:
        raise ValueError("every row of tokens must start with <start> (see tokenize)")
    if stray:
        raise ValueError(
            "every row of tokens must be <start>, then words, then padding only (see tokenize)"
        )


def detokenize(tokens: torch.Tensor) -> List[str]:
    """The captions back from token ids: the inverse of :func:`tokenize`."""
    if not isinstance(tokens, torch.Tensor) or tokens.dtype != torch.long:
        raise TypeError("tokens must be a LongTensor [N, L]")
    if tokens.ndim != 2:
        raise ValueError(f"tokens must have shape [N, L], got {tuple(tokens.shape)}")
    if tokens.shape[0] and not tokens.shape[1]:
        raise ValueError("every row of tokens must start with <start>")
    if tokens.numel():
        _check_token_values(tokens)
    return [" ".join(VOCAB[i] for i in row[1:] if i != PAD) for row in tokens.tolist()]


# ---- networks ---------------------------------------------------------------------------------------


def masked_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, heads: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D / heads)) v over the keys where ``mask`` is True, per head (Vaswani et
    al. 2017): q [N, Lq, D], k and v [N, Lk, D], mask [N, Lk]; masked keys get weight exactly
    zero."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:  # a float mask is a bias
        raise TypeError("mask must be a bool tensor [N, Lk]: True where a key may be attended")
    check_tensor(q, "q", ndim=3)
    n, lq, d = q.shape
    if d % check_int(heads, "heads", low=1):
        raise ValueError(f"heads ({heads}) must divide the features' width D = {d}")
    check_tensor(k, "k", shape=(n, None, d)), check_tensor(v, "v", shape=k.shape)
    check_tensor(mask, "mask", shape=k.shape[:2], device=k.device)
    split = lambda z: z.reshape(n, z.shape[1], heads, d // heads).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        split(q), split(k), split(v), attn_mask=mask[:, None, None, :]
    )
    return out.transpose(1, 2).reshape(n, lq, d)


class TextEncoder(nn.Module):
    """Token ids -> one feature vector per token: embeddings of the words and of their positions, then
    ``layers`` pre-norm transformer blocks whose self-attention skips the padding. Returns
    (features [N, L, dim], mask [N, L]); the caption U-Net summarises a caption by the mean of its
    features over the tokens the mask keeps."""

    def __init__(self, dim: int = 32, layers: int = 2, heads: int = 2, max_len: int = MAX_TOKENS):
        super().__init__()
        check_int(dim, "dim", low=1)
        check_int(layers, "layers", low=0)
        check_int(heads, "heads", low=1)
        check_int(max_len, "max_len", low=1)
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.dim, self.heads, self.max_len = dim, heads, max_len
        self.word = nn.Embedding(len(VOCAB), dim)
        self.position = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(
            nn.ModuleDict(
                {
                    "norm1": LayerNorm(dim),
                    "qkv": Linear(dim, 3 * dim),
                    "proj": Linear(dim, dim),
                    "norm2": LayerNorm(dim),
                    "mlp": nn.Sequential(Linear(dim, 2 * dim), nn.GELU(), Linear(2 * dim, dim)),
                }
            )
            for _ in range(layers)
        )
        self.norm = LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        check_tokens(
            tokens,
            tokens.shape[0] if isinstance(tokens, torch.Tensor) else -1,
            self.word.weight.device,
            self.max_len,
        )
        mask = tokens != PAD
        h = (
            self.word(tokens)
            + self.position(torch.arange(tokens.shape[1], device=tokens.device))[None]
        )
        for b in self.blocks:
            q, k, v = b["qkv"](b["norm1"](h)).chunk(3, dim=-1)
            h = h + b["proj"](masked_attention(q, k, v, mask, self.heads))
            h = h + b["mlp"](b["norm2"](h))
        return self.norm(h), mask


class CrossAttention(nn.Module):
    """Image features read the caption: each pixel's features (the queries) attend to the tokens'
    features (keys and values), padding excluded, and the result is added back (Rombach et al. 2022's
    cross-attention, as in Stable Diffusion). The output projection starts at zero, so a new block is
    the identity until training gives it a use."""

    def __init__(self, channels: int, context_dim: int, heads: int = 2):
        super().__init__()
        channels, heads = check_int(channels, "channels", low=1), check_int(heads, "heads", low=1)
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = GroupNorm(min(8, channels), channels)
        self.q = Linear(channels, channels)
        self.kv = Linear(check_int(context_dim, "context_dim", low=1), 2 * channels)
        self.out = Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, c, height, width = h.shape
        q = self.q(self.norm(h).flatten(2).transpose(1, 2))  # [N, H*W, C]
        k, v = self.kv(context).chunk(2, dim=-1)  # [N, L, C] each
        out = self.out(masked_attention(q, k, v, mask, self.heads))
        return h + out.transpose(1, 2).reshape(n, c, height, width)


# ---- measuring: does a sample satisfy its caption? ------------------------------------------------------


def _read(judge: nn.Module, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """The judge's digit for each image, in chunks. A NaN image would be read as 0 (the argmax of NaN
    logits), and pass every caption that names 0: refused."""
    check_callable(judge, "judge")  # images -> logits: a classifier, or any such function
    check_finite(check_tensor(x, name, floating=True, ndim=4), name)
    with torch.no_grad():
        return torch.cat([judge(chunk).argmax(1) for chunk in x.split(1000)])


def satisfied(judge: nn.Module, x: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
    """BoolTensor [N]: whether the judge (an evaluation classifier of digits) reads sample i as a
    digit that caption i names."""
    captions = [captions] if isinstance(captions, str) else check_strs(captions, "captions")
    check_tensor(x, "x", floating=True)
    if x.shape[0] != len(captions):
        raise ValueError(
            f"x must hold one image per caption ({len(captions)}), got {tuple(x.shape)}"
        )
    read = _read(judge, x)
    return caption_mask(captions).to(read.device)[torch.arange(len(read), device=read.device), read]


class CaptionReference(NamedTuple):
    """What real digits score on captions (see :func:`caption_references`)."""

    floor: torch.Tensor  # [K] share of the real digits that satisfy caption k
    ceiling: torch.Tensor  # [K] share of those that the judge also reads as satisfying it
    x: torch.Tensor  # the real digits that satisfy each caption, stacked
    k: torch.Tensor  # the caption each of them stands for


def caption_references(
    judge: nn.Module, captions: Sequence[str], x_real: torch.Tensor, y_real: torch.Tensor
) -> CaptionReference:
    """The references of the caption metric from real (held-out) digits ``x_real`` with labels
    ``y_real``: the **floor** (what a generator that ignores the caption scores), the **ceiling**
    (what the judge lets real digits score), and, for diversity, the digits that satisfy each caption."""
    captions = [captions] if isinstance(captions, str) else check_strs(captions, "captions")
    if not captions:
        raise ValueError("captions must hold at least one caption")
    check_tensor(x_real, "x_real", floating=True, nonempty=True)
    y_real = check_labels(y_real, x_real.shape[0], 10, x_real.device, name="y_real")  # digits 0..9
    mask = caption_mask(captions).to(y_real.device)  # [K, 10]
    true, read = mask[:, y_real], mask[:, _read(judge, x_real, "x_real")]  # [K, N] each
    if not true.any(1).all():
        raise ValueError("every caption needs at least one real digit that satisfies it")
    ceiling = torch.stack([read[k][true[k]].float().mean() for k in range(len(captions))])
    k = torch.arange(len(captions), device=y_real.device)[:, None].expand_as(true)[true]
    return CaptionReference(true.float().mean(1), ceiling, x_real[true.nonzero()[:, 1]], k)
