"""Reference solution to exercise 12.4: exact draws from the tilted law by
rejection.

The tilted law p(x|y)^gamma p(x)^(1 - gamma) / Z is, by Bayes' rule,
proportional to p(x|y) p(y|x)^(gamma - 1) and to p(x) p(y|x)^gamma. For gamma
>= 1 propose from p(x|y) and keep a proposal with probability p(y|x)^(gamma -
1); for gamma < 1 propose from p(x) and keep it with probability p(y|x)^gamma.
Both are at most 1, so every kept point is an exact draw."""

import torch


def tilted_by_rejection(
    mixture, y: int, gamma: float, n: int, generator: torch.Generator = None
):
    """n exact draws from the tilted law of class y, and the share of proposals
    that were kept."""
    if gamma >= 1:
        power, proposal = gamma - 1, y
    else:
        power, proposal = gamma, None
    kept, proposed = [], 0
    while sum(len(k) for k in kept) < n:
        x, _ = mixture.sample(4 * n, proposal, generator=generator)
        keep_prob = mixture.class_log_posterior(x)[:, y].mul(power).exp()
        u = torch.rand(
            4 * n, generator=generator, dtype=x.dtype, device=x.device
        )
        kept.append(x[u < keep_prob])
        proposed += 4 * n
    total = sum(len(k) for k in kept)
    return torch.cat(kept)[:n], total / proposed
