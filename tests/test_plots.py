import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from diffcourse.data import three_blobs  # noqa: E402
from diffcourse.plots import density_grid, samples_over_density  # noqa: E402

from conftest import random_mixture  # noqa: E402


def test_density_grid_is_the_density():
    mix = three_blobs(dtype=torch.float64)
    gx, gy, p = density_grid(mix, lim=4.0, cells=300)
    assert gx.shape == gy.shape == p.shape == (300, 300)
    cell = (8.0 / 299) ** 2
    assert abs(p.sum().item() * cell - 1) < 0.01          # all the mass sits inside the square
    with pytest.raises(ValueError, match="dim"):
        density_grid(random_mixture(3, (1, 1)))


def test_samples_over_density_draws_one_set_per_class():
    mix = three_blobs()
    x, y = mix.sample(300, generator=torch.Generator().manual_seed(0))
    fig, ax = plt.subplots()
    samples_over_density(ax, density_grid(mix, cells=50), x, y, "title", per_class=20)
    sizes = [len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets") and len(c.get_offsets())]
    assert sorted(sizes)[-3:] == [20, 20, 20] and ax.get_title() == "title"
    plt.close(fig)


def test_image_grid():
    from diffcourse.plots import image_grid
    x = torch.linspace(-1, 1, 6 * 64).reshape(6, 1, 8, 8)
    fig, ax = plt.subplots()
    image_grid(ax, x, rows=2, title="t", row_labels=["a", "b"])
    shown = ax.get_images()[0].get_array()
    assert shown.shape == (2 * 10, 3 * 10)                       # 1-pixel white gutters round each tile
    assert torch.allclose(torch.as_tensor(shown[1:9, 11:19]), x[1, 0])   # row 0, column 1 = image 1
    assert torch.allclose(torch.as_tensor(shown[11:19, 1:9]), x[3, 0])   # row 1, column 0 = image 3
    with pytest.raises(ValueError, match="rows"):
        image_grid(ax, x, rows=4)
    plt.close(fig)


def test_density_grid_of_the_noisy_law():
    mix = three_blobs(dtype=torch.float64)
    for a in (0.9, 0.3):
        gx, gy, p = density_grid(mix, alpha_bar=a, cells=60)
        _, _, q = density_grid(mix.diffuse(a), cells=60)
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="alpha_bar"):
        density_grid(mix, alpha_bar=0.0)
    fig, ax = plt.subplots()
    x = mix.sample(50, generator=torch.Generator().manual_seed(0))[0]
    samples_over_density(ax, density_grid(mix, cells=30), x, filled=True)
    plt.close(fig)
