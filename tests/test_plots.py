import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from conftest import random_mixture  # noqa: E402

from diffcourse.data import three_blobs  # noqa: E402
from diffcourse.plots import density_grid, samples_over_density  # noqa: E402


def test_density_grid_is_the_density():
    mix = three_blobs(dtype=torch.float64)
    gx, gy, p = density_grid(mix, lim=4.0, cells=300)
    assert gx.shape == gy.shape == p.shape == (300, 300)
    cell = (8.0 / 299) ** 2
    assert abs(p.sum().item() * cell - 1) < 0.01  # all the mass sits inside the square
    with pytest.raises(ValueError, match="dim"):
        density_grid(random_mixture(3, (1, 1)))


def test_samples_over_density_draws_one_set_per_class():
    mix = three_blobs()
    x, y = mix.sample(300, generator=torch.Generator().manual_seed(0))
    fig, ax = plt.subplots()
    samples_over_density(ax, density_grid(mix, cells=50), x, y, "title", per_class=20)
    sizes = [
        len(c.get_offsets())
        for c in ax.collections
        if hasattr(c, "get_offsets") and len(c.get_offsets())
    ]
    assert sorted(sizes)[-3:] == [20, 20, 20] and ax.get_title() == "title"
    plt.close(fig)


def test_image_grid():
    from diffcourse.plots import image_grid

    x = torch.linspace(-1, 1, 6 * 64).reshape(6, 1, 8, 8)
    fig, ax = plt.subplots()
    image_grid(ax, x, rows=2, title="t", row_labels=["a", "b"])
    shown = ax.get_images()[0].get_array()
    assert shown.shape == (2 * 10, 3 * 10)  # 1-pixel white gutters round each tile
    assert torch.allclose(torch.as_tensor(shown[1:9, 11:19]), x[1, 0])  # row 0, column 1 = image 1
    assert torch.allclose(torch.as_tensor(shown[11:19, 1:9]), x[3, 0])  # row 1, column 0 = image 3
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


# Animations: frames from a sampler's callback(step, x_t, x0_hat), as self-contained offline HTML.
import base64  # noqa: E402
import inspect  # noqa: E402
import io  # noqa: E402
import re  # noqa: E402

from PIL import Image  # noqa: E402

from diffcourse.plots import FrameCollector, JSAnimation, animate_images, animate_samples  # noqa: E402


def frames_of(anim: JSAnimation) -> list:
    """The animation's frames, decoded."""
    data = re.findall(r'"data:image/png;base64,([^"]*)"', anim.html)
    return [Image.open(io.BytesIO(base64.b64decode(d))).convert("RGB") for d in data]


def fake_run(collector, steps=20, n=90, seed=0):
    """A made-up trajectory from noise (t = steps) to three clusters (t = 0), through the callback."""
    g = torch.Generator().manual_seed(seed)
    noise, x0 = (
        torch.randn(n, 2, generator=g),
        torch.tensor([[-2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]).repeat(n // 3, 1),
    )
    for step in range(steps - 1, -1, -1):
        w = step / steps
        x_t = w * noise + (1 - w) * x0
        collector(step, x_t, x0)
        x_t.add_(100.0)  # a sampler may reuse its buffer: the collector must have copied
    return collector.finish(x0), x0


def test_frame_collector_keeps_every_kth_step_as_book_time():
    keep, x0 = fake_run(FrameCollector(every=3), steps=10)
    assert keep.times == [10, 7, 4, 1, 0]  # steps 9, 6, 3, 0 are t = 10, 7, 4, 1; then x_0
    assert torch.equal(keep.x_t[-1], x0) and torch.equal(keep.x0_hat[0], x0)
    assert keep.x_t[0].abs().max() < 10  # copied before the sampler's in-place update
    assert keep.x_t[0].dtype == torch.float32 and keep.x_t[0].device.type == "cpu"
    with pytest.raises(TypeError, match="every"):
        FrameCollector(every=2.0)
    with pytest.raises(ValueError, match="every"):
        FrameCollector(every=0)
    with pytest.raises(ValueError, match="x0"):
        keep.finish(torch.zeros(3, 2))


def test_animate_samples_is_small_offline_html_with_a_frame_per_kept_step():
    runs = {f"gamma = {g}": fake_run(FrameCollector(), seed=g)[0] for g in (0, 1, 4)}
    y = torch.arange(90) % 3
    grid = density_grid(three_blobs(), cells=40)
    anim = animate_samples(runs, grid, y=y, max_frames=6)
    frames = frames_of(anim)
    assert anim.frames == len(frames) == 6 and isinstance(anim._repr_html_(), str)
    assert frames[0].size == frames[-1].size and frames[0].tobytes() != frames[-1].tobytes()
    assert "slider" in anim.html and "<i class=" not in anim.html  # controls, no icon font
    assert not re.search(r'(src|href)="(https?:)?//', anim.html)  # nothing from another host
    assert anim.nbytes < 200_000, anim
    assert plt.get_fignums() == []  # no still left for the notebook


def test_animate_samples_shows_the_times_it_was_given():
    keep = fake_run(FrameCollector(every=5))[0]
    anim = animate_samples({"a": keep.x_t}, density_grid(three_blobs(), cells=30), times=keep.times)
    assert anim.frames == len(keep.times) == 5


def test_animate_samples_bad_input():
    keep = fake_run(FrameCollector(every=5))[0]
    grid = density_grid(three_blobs(), cells=30)
    with pytest.raises(TypeError, match="panels"):
        animate_samples({}, grid)
    with pytest.raises(TypeError, match="panels"):
        animate_samples([keep], grid)
    with pytest.raises(ValueError, match="panels"):
        animate_samples({"a": keep, "b": keep.x_t[:-1]}, grid)
    with pytest.raises(ValueError, match="panels"):
        animate_samples({"a": [torch.zeros(5, 3)]}, grid)
    with pytest.raises(ValueError, match="times"):
        animate_samples({"a": keep}, grid, times=[1, 0])
    with pytest.raises(ValueError, match="y"):
        animate_samples({"a": keep}, grid, y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="max_frames"):
        animate_samples({"a": keep}, grid, max_frames=1)


def test_animate_images_shows_each_panel_denoising():
    keep = FrameCollector(every=2)
    clean = torch.linspace(-1, 1, 6 * 64).reshape(6, 1, 8, 8)
    for step in range(9, -1, -1):
        keep(
            step,
            clean
            + step / 5 * torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(step)),
            clean,
        )
    keep.finish(clean)
    anim = animate_images(
        {"x_t": keep.x_t, "x0_hat": keep.x0_hat}, rows=2, times=keep.times, max_frames=4
    )
    frames = frames_of(anim)
    assert anim.frames == len(frames) == 4 and frames[0].tobytes() != frames[-1].tobytes()
    assert anim.nbytes < 200_000 and plt.get_fignums() == []
    with pytest.raises(ValueError, match="rows"):
        animate_images({"x_t": keep.x_t}, rows=4)
    with pytest.raises(TypeError, match="rows"):
        animate_images({"x_t": keep.x_t}, rows="2")
    with pytest.raises(ValueError, match="panels"):
        animate_images({"x_t": [torch.zeros(6, 8, 8)]}, rows=2)


def test_frame_collector_is_a_sampler_callback():
    """With the samplers' callback(step, x_t, x0_hat): every step seen, the last frame the samples."""
    from diffcourse.mixture import exact_eps_fn
    from diffcourse.samplers import ddpm_sample
    from diffcourse.schedules import cosine_schedule

    if "callback" not in inspect.signature(ddpm_sample).parameters:
        pytest.skip("ddpm_sample has no callback yet")
    mix, schedule = three_blobs(), cosine_schedule(20)
    keep = FrameCollector()
    x = ddpm_sample(
        exact_eps_fn(mix, schedule),
        (30, 2),
        schedule,
        generator=torch.Generator().manual_seed(0),
        progress=False,
        callback=keep,
    )
    keep.finish(x)
    assert keep.times == list(range(20, -1, -1)) and torch.equal(keep.x_t[-1], x)


from diffcourse.plots import line_plot, samples_grid  # noqa: E402


def test_line_plot_draws_each_curve_with_labels():
    ax = line_plot(
        [1, 2, 4],
        {"a": [1.0, 2.0, 3.0], "b": torch.tensor([3.0, 2.0, 1.0])},
        "gamma",
        "error",
        title="t",
        logy=True,
        styles={"b": "--o"},
    )
    assert [line.get_label() for line in ax.get_lines()] == ["a", "b"]
    assert ax.get_xlabel() == "gamma" and ax.get_ylabel() == "error" and ax.get_yscale() == "log"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="curves"):
        line_plot([1, 2], {"a": [1.0]}, "x", "y")
    with pytest.raises(TypeError, match="curves"):
        line_plot([1, 2], [1.0, 2.0], "x", "y")


def test_samples_grid_one_panel_per_entry():
    mix = three_blobs()
    x, y = mix.sample(90, generator=torch.Generator().manual_seed(0))
    fig = samples_grid(
        density_grid(mix, cells=30), {"a": {"1": x, "2": x}, "b": {"3": x, "4": x}}, y, per_class=10
    )
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["1", "2", "3", "4"]
    assert axes[2].get_xlabel() == "$x_1$" and axes[0].get_ylabel() == "$x_2$"
    plt.close(fig)
    with pytest.raises(ValueError, match="rows"):
        samples_grid(density_grid(mix, cells=30), {"a": {"1": x}, "b": {"3": x, "4": x}})


# ---- sweep_grid and sampled_frames (labs 5 and 6) ----------------------------------------------------
from diffcourse.plots import sampled_frames, sweep_grid  # noqa: E402


def test_sweep_grid_has_a_row_per_kind_and_titles_with_both_measures():
    grid = density_grid(three_blobs(), cells=20)
    gen = torch.Generator().manual_seed(0)
    samples, values = {}, {}
    for kind in ("exact", "CFG"):
        for g in (0.0, 1.0, 4.0):
            samples[kind, g] = torch.randn(30, 2, generator=gen)
            values[kind, g] = (0.5 + g / 10, 1.0 - g / 10)
    y = torch.arange(3).repeat(10)
    fig = sweep_grid(grid, samples, values, ("agreement", "spread"), y, gammas=[1.0, 4.0])
    titles = [ax.get_title() for ax in fig.axes]
    assert len(titles) == 4
    assert titles[1] == "exact, $\\gamma$ = 4\nagreement 0.90, spread 0.60"
    assert titles[2].startswith("CFG, $\\gamma$ = 1\n")
    plt.close(fig)
    with pytest.raises(ValueError, match="measures"):
        sweep_grid(grid, samples, values, ("agreement",))
    with pytest.raises(TypeError, match="values"):
        sweep_grid(grid, samples, {}, ("a", "b"))


def test_sampled_frames_keeps_every_fifth_step_and_the_end():
    def sample(eps_fn, callback):
        x = torch.zeros(4, 2)
        for step in range(11, -1, -1):
            callback(step, x + step, x)
        return x + eps_fn

    frames = sampled_frames(sample, {"a": 1.0, "b": 2.0}, every=5)
    assert list(frames) == ["a", "b"]
    assert frames["a"].times == [12, 7, 2, 0]
    assert torch.equal(frames["b"].x_t[-1], torch.full((4, 2), 2.0))
    with pytest.raises(TypeError, match="eps_fns"):
        sampled_frames(sample, [])
