"""Reference solution to exercise 10.2: the exact "not" that a negative prompt is not.

If y+ and y- are independent given x, p(x | y+, not y-) = p(x | y+) (1 - p(y- | x)) / Z. At noise level
t its score is grad log p_t(x | y+) + grad log(1 - p_t(y- | x)). The second term equals
-p / (1 - p) grad log p(y- | x), a push weighted by the odds of y-, but written that way it is
0 times infinity deep inside y-, where p = 1 in floating point. So it is computed as what it also
is: the classifier gradient of "not y-", in the mixture relabelled with two classes, y- and the rest.
A condition is a labelled mixture and a label, as in ``diffcourse.mixture.composed_log_prob``.
"""
import torch

from diffcourse.mixture import GaussianMixture
from diffcourse.targets import score_to_eps


def not_score(plus: GaussianMixture, y_plus: int, minus: GaussianMixture, y_minus: int,
              x: torch.Tensor) -> torch.Tensor:
    """grad log [p(x | y+) (1 - p(y- | x))] for mixtures ``plus`` and ``minus`` (one noise level)."""
    rest = GaussianMixture(minus.means, minus.covs, minus.weights, (minus.labels != y_minus).long())
    return plus.score(x, y_plus) + rest.classifier_grad(x, 1)      # class 1 of `rest`: not y-


def not_eps_fn(plus: GaussianMixture, y_plus: int, minus: GaussianMixture, y_minus: int, schedule):
    """The noise predictor of p_t(x | y+, not y-) for a sampler: eps = -sqrt(1 - alpha_bar) score."""
    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x_t)
        for step in torch.unique(t).tolist():
            rows = (t == step).nonzero()[:, 0]
            a = float(schedule.alpha_bar[step])
            score = not_score(plus.diffuse(a), y_plus, minus.diffuse(a), y_minus, x_t[rows])
            out[rows] = score_to_eps(score, a)
        return out
    return eps_fn
