from contextlib import contextmanager

import pytest
import torch

from diffcourse.mixture import GaussianMixture

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@contextmanager
def torch_threads(threads: int):
    """Run the block with torch at ``threads`` CPU threads, then put the count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def flip_a_byte_of(path, tensor: torch.Tensor) -> None:
    """Flip one bit in the middle of ``tensor``'s bytes where ``torch.save`` stored them in ``path``
    (the damage a bad disk or a copy does), leaving the archive's layout intact."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().cpu().contiguous().numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "the tensor's bytes are not in the file"
    data[at + len(raw) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def random_mixture(
    dim: int,
    components_per_class=(2, 3),
    seed: int = 0,
    dtype=torch.float64,
    shared: bool = False,
) -> GaussianMixture:
    """A mixture with full random covariances and several components per class; ``shared``: one
    random covariance for all components (the mixture takes its other path for those)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((k,), c) for c, k in enumerate(components_per_class)])
    K = labels.numel()
    means = 2 * torch.randn(K, dim, generator=g, dtype=torch.float64)
    A = torch.randn(K, dim, dim, generator=g, dtype=torch.float64)
    if shared:
        A = A[:1].expand(K, dim, dim)
    covs = 0.3 * A @ A.transpose(1, 2) + 0.2 * torch.eye(dim, dtype=torch.float64)
    weights = torch.rand(K, generator=g, dtype=torch.float64) + 0.2
    return GaussianMixture(means.to(dtype), covs.to(dtype), weights.to(dtype), labels)


@pytest.fixture
def mix2():
    return random_mixture(2)
