"""Reference solution to exercise 6.3: tilt then noise, or noise then tilt, for
two 1-D Gaussians.

The class law is N(mu, s2), the data law N(0, v2); the tilted law is
p(x|y)^gamma p(x)^(1-gamma), normalised; a = abar_t. Tilting Gaussians adds
their precisions with weights gamma and 1 - gamma, and noising N(m, c) gives
N(sqrt(a) m, a c + 1 - a) (chapter 6)."""


def tilt(m1: float, c1: float, m2: float, c2: float, gamma: float):
    """Mean and variance of N(m1, c1)^gamma N(m2, c2)^(1-gamma), normalised
    (needs a positive precision)."""
    precision = gamma / c1 + (1 - gamma) / c2
    if precision <= 0:
        raise ValueError("the tilted precision is not positive: no Gaussian")
    var = 1 / precision
    return var * (gamma * m1 / c1 + (1 - gamma) * m2 / c2), var


def noise(m: float, c: float, a: float):
    """Mean and variance of sqrt(a) x_0 + sqrt(1 - a) eps for x_0 ~ N(m, c)."""
    return a**0.5 * m, a * c + 1 - a


def tilt_then_noise(mu: float, s2: float, v2: float, gamma: float, a: float):
    """(mean, variance) of the clean tilted law, diffused to the level a: what
    a sampler of it needs."""
    return noise(*tilt(mu, s2, 0.0, v2, gamma), a)


def noise_then_tilt(mu: float, s2: float, v2: float, gamma: float, a: float):
    """(mean, variance) of the law whose score eq. 170 gives at level a: the
    noisy laws, tilted."""
    return tilt(*noise(mu, s2, a), *noise(0.0, v2, a), gamma)
