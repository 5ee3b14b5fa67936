import pytest
import torch

from diffcourse.data import three_blobs, two_moons


def test_shapes_and_classes():
    b, m = three_blobs(), two_moons()
    assert (b.num_classes, b.dim, b.num_components) == (3, 2, 3)
    assert (m.num_classes, m.dim, m.num_components) == (2, 2, 32)
    assert three_blobs(dtype=torch.float64).dtype == torch.float64
    # both sets are centred near the origin with a spread near one, as the unit-variance noise expects
    for mix in (b, m):
        x, _ = mix.sample(20000, generator=torch.Generator().manual_seed(0))
        assert x.mean(0).abs().max() < 0.3 and 0.3 < x.std(0).min() and x.std(0).max() < 1.5


def test_bad_input():
    with pytest.raises(ValueError, match="std"):
        three_blobs(std=0)
    with pytest.raises(ValueError, match="components"):
        two_moons(components=0)
