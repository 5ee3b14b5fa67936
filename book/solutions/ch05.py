"""Reference solution to exercise 5.3: condition dropout.

Each label is replaced by the null label with probability p_uncond, by a coin
independent of the example, so that one network learns the conditional and the
unconditional model (chapter 5)."""

import torch


def drop_labels(
    y: torch.Tensor,
    p_uncond: float,
    null_label: int,
    generator: torch.Generator = None,
) -> torch.Tensor:
    """A copy of the LongTensor ``y`` with each entry replaced by
    ``null_label`` with probability ``p_uncond``, independently of the others
    and of the label's value."""
    if not 0 <= p_uncond <= 1:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
    coins = torch.rand(y.shape, generator=generator, device=y.device)
    return torch.where(coins < p_uncond, torch.full_like(y, null_label), y)
