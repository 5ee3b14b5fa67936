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
    grid = density_grid(mix, cells=20)
    with pytest.raises(ValueError, match=r"^x must have shape \[N, 2\]"):  # was matplotlib's error
        samples_over_density(ax, grid, torch.randn(50, 3))
    with pytest.raises(ValueError, match=r"^y must have shape \[300\]"):
        samples_over_density(ax, grid, x, y[:10])
    with pytest.raises(TypeError, match="^y must be an integer"):
        samples_over_density(ax, grid, x, y.float())
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
    with pytest.raises(TypeError, match="^rows must be an int"):  # was a reshape error
        image_grid(ax, x, 2.0)
    with pytest.raises(TypeError, match="^x must be a torch.Tensor"):  # was .detach of an array
        image_grid(ax, x.numpy(), 2)
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
    with pytest.raises(ValueError, match="^x0 has shape"):
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


def test_the_animations_name_their_colours_and_rows(monkeypatch):
    from diffcourse import plots

    monkeypatch.setattr(plots, "_to_html", lambda fig, *args: fig)  # the figure, not its HTML
    keep = fake_run(FrameCollector(every=5))[0]
    grid = density_grid(three_blobs(), cells=30)
    fig = animate_samples({"a": keep, "b": keep}, grid, y=torch.arange(90) % 3)
    legend = fig.get_axes()[-1].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [f"asked y = {c}" for c in range(3)]
    assert animate_samples({"a": keep}, grid).get_axes()[0].get_legend() is None  # one colour
    images = FrameCollector()
    images(0, torch.zeros(6, 1, 8, 8), torch.zeros(6, 1, 8, 8))
    fig = animate_images({"$x_t$": images}, rows=2, ylabel="asked digit y")
    assert fig.get_axes()[0].get_ylabel() == "asked digit y"
    plt.close("all")


def test_animate_samples_bad_input():
    keep = fake_run(FrameCollector(every=5))[0]
    grid = density_grid(three_blobs(), cells=30)
    with pytest.raises(ValueError, match="panels must hold at least one"):
        animate_samples({}, grid)
    with pytest.raises(TypeError, match="panels"):
        animate_samples([keep], grid)
    with pytest.raises(ValueError, match="panels"):
        animate_samples({"a": keep, "b": keep.x_t[:-1]}, grid)
    with pytest.raises(ValueError, match="panels"):
        animate_samples({"a": [torch.zeros(5, 3)]}, grid)
    with pytest.raises(ValueError, match="times"):
        animate_samples({"a": keep}, grid, times=[1, 0])
    with pytest.raises(ValueError, match="^y must have shape"):
        animate_samples({"a": keep}, grid, y=torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match="^y must be an integer tensor"):  # colours by class
        animate_samples({"a": keep}, grid, y=torch.zeros(90))
    with pytest.raises(ValueError, match="^per_class must be an int >= 1"):
        animate_samples({"a": keep}, grid, per_class=0)
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


def test_line_plot_takes_colour_in_a_style_and_legend_options():
    from matplotlib.colors import to_rgba

    curves = {"teacher": [1.0, 2.0], "student": [2.0, 3.0]}
    styles = {"teacher": "C1-", "student": "C1o--"}
    legend = {"ncol": 2, "title": "gamma"}
    ax = line_plot([1, 2], curves, "t", "error", styles=styles, legend=legend)
    teacher, student = ax.get_lines()
    assert to_rgba(teacher.get_color()) == to_rgba(student.get_color()) == to_rgba("C1")
    assert student.get_marker() == "o" and student.get_linestyle() == "--"
    box = ax.get_legend()
    assert box.get_title().get_text() == "gamma"
    ax.figure.canvas.draw()  # two columns: both entries on one row
    first, second = (text.get_window_extent().y0 for text in box.get_texts())
    assert first == pytest.approx(second)
    assert box.get_texts()[0].get_fontsize() == 8  # the default size kept
    plt.close(ax.figure)
    with pytest.raises(TypeError, match="legend"):
        line_plot([1, 2], curves, "t", "error", legend="upper left")


def test_a_drawing_function_shows_its_figure_once_in_a_notebook(monkeypatch):
    # with the inline backend: shown when drawn, closed, and its value shows nothing as a cell's
    # last line (else IPython shows the figure a second time); nothing changes elsewhere
    from diffcourse import plots

    formatters = pytest.importorskip("IPython.core.formatters")
    ipython_display = pytest.importorskip("IPython.display")
    quiet = formatters.DisplayFormatter().format
    shown = []
    monkeypatch.setattr(ipython_display, "display", shown.append)
    fig = plots.point_clouds({"a": torch.zeros(5, 2)}, per_panel=5)  # not in a kernel
    assert not shown and plt.fignum_exists(fig.number) and quiet(fig)[0]
    plt.close(fig)
    monkeypatch.setattr(plots, "_inline_backend", lambda: True)
    fig = plots.point_clouds({"a": torch.zeros(5, 2)}, per_panel=5)
    assert shown == [fig] and not plt.fignum_exists(fig.number) and quiet(fig) == ({}, {})
    panels = [{"a": ([1, 2], [1.0, 2.0])}, {"b": ([1, 2], [2.0, 1.0])}]
    axes = plots.curve_panels(panels, "x", ["y0", "y1"])  # a list of axes
    assert shown[-1] is axes[0].figure and quiet(axes) == ({}, {}) and len(axes) == 2
    # drawn inside another drawing function: shown once, by the outer one
    plots.mixture_classes(three_blobs(), n=30, per_class=10)
    assert len(shown) == 3
    _, ax = plt.subplots()  # the caller's axes: the caller's to show
    assert plots.line_plot([1, 2], {"a": [1.0, 2.0]}, "x", "y", ax=ax) is ax
    assert plots.score_error_curve(torch.rand(10), 2, ax) is ax  # passed by position too
    assert len(shown) == 3 and plt.fignum_exists(ax.figure.number)
    plt.close(ax.figure)
    fig = plots.point_clouds({"a": torch.zeros(5, 2)}, per_panel=5, show=False)  # to add to
    assert len(shown) == 3 and plt.fignum_exists(fig.number) and quiet(fig)[0]
    plt.close(fig)
    with pytest.raises(TypeError, match="show"):
        plots.point_clouds({"a": torch.zeros(5, 2)}, per_panel=5, show="no")


def test_samples_grid_one_panel_per_entry():
    mix = three_blobs()
    x, y = mix.sample(90, generator=torch.Generator().manual_seed(0))
    fig = samples_grid(
        density_grid(mix, cells=30), {"a": {"1": x, "2": x}, "b": {"3": x, "4": x}}, y, per_class=10
    )
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["1", "2", "3", "4"]
    assert axes[2].get_xlabel() == "$x_1$" and axes[0].get_ylabel() == "$x_2$"
    assert axes[0].get_xlim() == pytest.approx((-3.5, 3.5))  # density_grid's default square
    assert all(ax.get_aspect() == 1 for ax in axes)  # a square box drawn square
    # one legend for the colours, above the grid, not over a panel's points
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        f"asked y = {c}" for c in range(3)
    ]
    assert all(ax.get_legend() is None for ax in axes)
    plt.close(fig)
    wide = samples_grid(density_grid(mix, lim=6.5, cells=30), {"": {"1": x}})
    assert wide.get_axes()[0].get_ylim() == pytest.approx((-6.5, 6.5))  # the grid's square
    plt.close(wide)
    with pytest.raises(ValueError, match="rows"):
        samples_grid(density_grid(mix, cells=30), {"a": {"1": x}, "b": {"3": x, "4": x}})
    # a row with empty panels (lab 4's learned pair at two of five gammas): the panels above an
    # empty one keep their x axis; only the first column labels the y axis
    fig = samples_grid(
        density_grid(mix, cells=30),
        {"a": {"1": x, "2": x, "3": x}, "b": {"4": None, "5": x, "6": None}},
    )
    a1, a2, a3, b5 = fig.get_axes()[:3] + [fig.get_axes()[4]]
    assert a1.get_xlabel() == a3.get_xlabel() == b5.get_xlabel() == "$x_1$" and not a2.get_xlabel()
    assert a1.get_ylabel() == "$x_2$" and not a3.get_ylabel() and not b5.get_ylabel()
    assert a1.xaxis.get_tick_params()["labelbottom"] and not b5.yaxis.get_tick_params()["labelleft"]
    plt.close(fig)


# ---- chapters 1 and 2: forward process, score error curve, point clouds, class panels -------------
from diffcourse.plots import (  # noqa: E402
    class_panels,
    forward_process,
    gain_band,
    mixture_classes,
    point_clouds,
    score_error_curve,
)
from diffcourse.schedules import cosine_schedule, q_sample  # noqa: E402


def test_forward_process_one_panel_per_step_drawn_in_order():
    mix, s = three_blobs(), cosine_schedule(20)
    fig = forward_process(mix, s, [0, 19], n=50, generator=torch.Generator().manual_seed(0))
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == [
        f"t = {k + 1}, alpha_bar = {float(s.alpha_bar[k]):.3f}" for k in (0, 19)
    ]
    # the last panel's dots are x_t of the same 50 data points, drawn after the first panel's
    g = torch.Generator().manual_seed(0)
    x0, _ = mix.sample(50, generator=g)
    q_sample(x0, torch.full((50,), 0), s, generator=g)
    x_t = q_sample(x0, torch.full((50,), 19), s, generator=g)
    dots = [c.get_offsets() for c in axes[1].collections if len(c.get_offsets()) == 50]
    assert torch.allclose(torch.tensor(dots[0]), x_t.double(), atol=1e-6)
    plt.close(fig)
    with pytest.raises(ValueError, match="^steps"):
        forward_process(mix, s, [20])


def test_score_error_curve_marks_the_mean_past_the_stiff_steps():
    errors = torch.tensor([1.0, 0.5, 0.1, 0.2, 0.3])
    ax = score_error_curve(errors, skip=2)
    mean_line = [ln for ln in ax.get_lines() if ln.get_label().startswith("mean")][0]
    assert abs(mean_line.get_ydata()[0] - 0.2) < 1e-7 and ax.get_xscale() == "log"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="^skip"):
        score_error_curve(errors, skip=5)
    with pytest.raises(TypeError, match="^errors"):
        score_error_curve([1.0, 2.0], skip=0)


def test_point_clouds_one_panel_per_set():
    x = torch.randn(30, 2)
    fig = point_clouds({"a": x, "b": x + 1}, per_panel=10, xlim=2.0, ylim=1.0)
    axes = fig.get_axes()
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    assert len(axes[1].collections[0].get_offsets()) == 10 and axes[0].get_ylim() == (-1.0, 1.0)
    plt.close(fig)
    with pytest.raises(TypeError, match="^panels"):
        point_clouds([x])
    with pytest.raises(ValueError, match="^panels\\['a'\\]"):
        point_clouds({"a": torch.randn(5, 3)})


def test_class_panels_colour_each_class_alike_and_mixture_classes():
    x, y = torch.randn(40, 2), torch.arange(2).repeat(20)
    fig = class_panels({"both": (x, y), "one": (x[y == 1], y[y == 1])}, 2, legend="y = {}")
    a, b = fig.get_axes()
    assert [c.get_label() for c in a.collections] == ["y = 0", "y = 1"]
    red = b.collections[0].get_facecolor()[0]
    assert (red == a.collections[1].get_facecolor()[0]).all()  # class 1 red in both panels
    assert len(b.collections[0].get_offsets()) == 20
    # one legend, below the panels, naming every class (the last panel shows only one)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["y = 0", "y = 1"]
    plt.close(fig)
    with pytest.raises(TypeError, match="pair"):
        class_panels({"a": x}, 2)
    fig = mixture_classes(
        three_blobs(), n=30, per_class=10, generator=torch.Generator().manual_seed(0)
    )
    assert [ax.get_title() for ax in fig.get_axes()][1:] == [f"p(x | y = {c})" for c in range(3)]
    legend = fig.legends[0]  # p(x)'s colours are named
    assert [t.get_text() for t in legend.get_texts()] == ["y = 0", "y = 1", "y = 2"]
    plt.close(fig)


def test_gain_band_draws_both_losses_the_band_and_the_formula():
    u, c = torch.tensor([1.0, 0.9, 0.8]), torch.tensor([0.9, 0.85, 0.8])
    ax = gain_band(u, c, u - c)
    labels = [ln.get_label() for ln in ax.get_lines()]
    formula = "loss with y + gain by the formula"
    assert labels == ["minimal loss without y", "minimal loss with y", formula]
    assert list(ax.get_lines()[2].get_xdata()) == [1, 2, 3]
    # drawn on top of the loss with y, so that a right formula traces the loss without y
    assert torch.equal(torch.as_tensor(ax.get_lines()[2].get_ydata()), u)
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="^loss_c"):
        gain_band(u, c[:2], u - c)


def test_tradeoff_places_each_method_with_its_label():
    from diffcourse.plots import tradeoff

    rows = {f"m{i}": {"d": float(i + 1), "s": 0.1 * i, "NFE": 10 * i} for i in range(12)}
    ax = tradeoff(rows, "d", "s", floor=1.5, logx=True, ylabel="spread")
    points = [c.get_offsets()[0].tolist() for c in ax.collections]
    assert points == [[i + 1.0, 0.1 * i] for i in range(12)]
    labels = ax.get_legend_handles_labels()[1]
    assert labels[0] == "m0, 0 NFE" and "noise floor" in labels
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "d" and ax.get_ylabel() == "spread"
    assert ax.lines[0].get_xdata()[0] == 1.5
    markers = {c.get_paths()[0].vertices.shape[0] for c in ax.collections[9:11]}
    assert len(markers) == 2  # the eleventh point has another marker
    plt.close("all")
    with pytest.raises(TypeError, match="rows"):
        tradeoff([1, 2], "d", "s")
    with pytest.raises(ValueError, match="NFE"):
        tradeoff({"a": {"d": 1.0, "s": 2.0}}, "d", "s")


def test_image_panels_draws_one_grid_per_panel():
    from diffcourse.plots import image_panels

    a = torch.linspace(-1, 1, 6 * 16).reshape(6, 1, 4, 4)
    fig = image_panels({"a": a, "b": -a}, 3, row_labels=["x", "y", "z"], ylabel="rows")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["a", "b"]
    assert axes[0].get_ylabel() == "rows" and axes[1].get_ylabel() == ""
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["x", "y", "z"]
    assert {t.get_text() for t in axes[1].get_yticklabels()} == {""}  # the rows labelled once
    img = axes[0].images[0].get_array()
    assert img.shape == (3 * 6, 2 * 6)  # 3 rows of 2 images, each 4 + 2 gutter pixels
    assert img[1, 1] == a[0, 0, 0, 0].item()
    plt.close("all")
    with pytest.raises(TypeError, match="panels"):
        image_panels([a], 3)
    with pytest.raises(ValueError, match="rows"):
        image_panels({"a": a}, 4)


def test_image_panels_of_different_widths_share_one_image_size():
    """A panel of 2 columns beside one of 8 (lab 10's condition | source pairs beside samples): each
    panel as wide as its columns, so that the panels have one height; unlabelled rows, no ticks."""
    from diffcourse.plots import image_panels

    a = torch.zeros(12, 1, 8, 8)
    fig = image_panels({"pairs": a, "samples": torch.zeros(48, 1, 8, 8)}, 6, row_labels=[""] * 6)
    fig.canvas.draw()
    (h0, h1), (w0, w1) = (
        [getattr(ax.get_position(), k) for ax in fig.axes] for k in ("height", "width")
    )
    assert abs(h0 / h1 - 1) < 0.02 and abs(w1 / w0 - 4) < 0.1, (h0, h1, w0, w1)
    assert fig.axes[0].yaxis.get_major_ticks()[0].tick1line.get_markersize() == 0
    plt.close("all")
    with pytest.raises(TypeError, match="panels\\['a'\\]"):
        image_panels({"a": [1, 2]}, 1)


# ---- chapters 3 and 4 ------------------------------------------------------------------------------


def test_bayes_fields_sum_left_and_middle_to_right():
    from diffcourse.plots import bayes_fields
    from diffcourse.schedules import cosine_schedule

    mix, s = three_blobs(dtype=torch.float64), cosine_schedule(50)
    fig = bayes_fields(mix, s, [0, 30], y=1, arrows=5, cells=20)
    axes = [ax for ax in fig.axes if ax.collections and ax.get_label() != "<colorbar>"]
    assert len(axes) == 6  # 2 steps x 3 fields, plus a colourbar
    quivers = [
        c for ax in axes for c in ax.collections if type(c).__name__ == "Quiver"
    ]  # unit arrows, coloured by log10 of the length
    assert len(quivers) == 6 and all(q.N == 25 for q in quivers)
    # the arrows' lengths (colour) of the right column: the conditional score at the grid points
    m_t = mix.diffuse(float(s.alpha_bar[30]))
    axis = torch.linspace(-3, 3, 5, dtype=torch.float64)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    expected = torch.log10(m_t.score(pts, 1).norm(dim=1)).numpy()
    assert abs(quivers[5].get_array() - expected).max() < 1e-6
    assert "class y = 1" in fig._suptitle.get_text()
    # p_t(y|x) is shaded on one scale, 0 to 1, in every row, and a colour bar reads it
    bars = [ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert any("p_t(y|x)" in b for b in bars) and any("unit length" in b for b in bars)
    for ax in axes[1::3]:
        assert list(ax.collections[0].levels) == pytest.approx([i / 10 for i in range(11)])
    plt.close(fig)
    with pytest.raises(ValueError, match="dim"):
        bayes_fields(random_mixture(3, (1, 1)), s, [0], y=0)
    with pytest.raises(ValueError, match="^y must be an int"):
        bayes_fields(mix, s, [0], y=3)


def test_class_signal_and_noisy_classifier_check_plots():
    from diffcourse.metrics import NoisyClassifierCheck
    from diffcourse.plots import class_signal, noisy_classifier_check

    t = [1, 50, 100]
    fig = class_signal(t, [0.4, 0.9, 0.01], [0.96, 0.6, 0.33], chance=1 / 3)
    left, right = fig.axes
    assert list(left.lines[0].get_ydata()) == [0.4, 0.9, 0.01]
    assert list(right.lines[0].get_ydata()) == [0.96, 0.6, 0.33]
    assert right.lines[1].get_ydata()[0] == 1 / 3  # the chance level, named in the legend
    assert "chance (0.33)" in [t.get_text() for t in fig.legends[0].get_texts()]
    plt.close(fig)
    check = NoisyClassifierCheck(*(torch.tensor([0.9, 0.5, 0.3]) for _ in range(4)))
    fig = noisy_classifier_check(t, check, chance=1 / 3)
    acc, grads = fig.axes
    assert len(acc.lines) == 3 and len(grads.lines) == 2 and grads.get_yscale() == "log"
    plt.close(fig)
    with pytest.raises(ValueError, match="one value per step"):
        class_signal(t, [0.4, 0.9], [0.96, 0.6, 0.33], chance=1 / 3)
    with pytest.raises(TypeError, match="check"):
        noisy_classifier_check(t, (1, 2, 3, 4), chance=1 / 3)
    with pytest.raises(ValueError, match="chance"):
        class_signal(t, t, t, chance=2.0)


def test_class_panels_take_named_classes_in_given_colours():
    x, y = torch.randn(30, 2), torch.arange(3).repeat(10)
    names, colors = ["red", "green", "blue"], ["tab:red", "tab:green", "tab:blue"]
    fig = class_panels({"a": (x, y)}, 3, legend=names, colors=colors)
    dots = fig.get_axes()[0].collections
    assert [c.get_label() for c in dots] == names
    assert [t.get_text() for t in fig.legends[0].get_texts()] == names
    green = matplotlib.colors.to_rgba("tab:green")
    assert tuple(dots[1].get_facecolor()[0]) == pytest.approx(green)
    plt.close(fig)
    with pytest.raises(ValueError, match="^legend must name 3"):
        class_panels({"a": (x, y)}, 3, legend=names[:2])
    with pytest.raises(ValueError, match="^colors must name 3"):
        class_panels({"a": (x, y)}, 3, colors=colors[:2])
    with pytest.raises(TypeError, match="^colors"):
        class_panels({"a": (x, y)}, 3, colors="tab:red")
    with pytest.raises(TypeError, match="^legend"):
        class_panels({"a": (x, y)}, 3, legend=3)


def test_samples_grid_rings_the_given_points_in_every_panel():
    from diffcourse.plots import samples_grid

    mix = three_blobs()
    x = mix.sample(40, generator=torch.Generator().manual_seed(0))[0]
    fig = samples_grid(density_grid(mix, cells=30), {"": {"1": x, "2": x}}, ring=mix.means[:1])
    for ax in fig.axes:  # the last scatter of each panel: one open magenta circle at the mean
        circle = ax.collections[-1]
        assert circle.get_offsets().tolist() == [mix.means[0].tolist()]
        assert tuple(circle.get_edgecolor()[0]) == matplotlib.colors.to_rgba("magenta")
        assert len(circle.get_facecolor()) == 0 or circle.get_facecolor()[0][3] == 0
    plt.close(fig)
    with pytest.raises(ValueError, match="^ring"):
        samples_grid(density_grid(mix, cells=30), {"": {"1": x}}, ring=torch.zeros(3))


def test_error_over_levels_draws_log_log_curves_at_one_based_levels():
    from diffcourse.plots import error_over_levels

    ax = error_over_levels([0, 9, 99], {"null": [2.0, 0.5, 0.1], "y": [1.0, 0.4, 0.1]}, "U-Net")
    first, second = ax.get_lines()
    assert first.get_xdata().tolist() == [1, 10, 100] and first.get_label() == "null"
    assert first.get_marker() == "o" and second.get_linestyle() == "--"
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_title() == "U-Net"
    assert ax.get_xlabel() == "level t"
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="^errors must hold one to four"):
        error_over_levels([0], {str(k): [1.0] for k in range(5)})
    with pytest.raises(TypeError, match="^errors must be a dict"):
        error_over_levels([0], [[1.0]])
    with pytest.raises(ValueError, match="curves"):
        error_over_levels([0, 1], {"a": [1.0]})


def test_samples_grid_leaves_a_none_panel_empty():
    from diffcourse.plots import samples_grid

    mix = three_blobs()
    x, y = mix.sample(90, generator=torch.Generator().manual_seed(0))
    rows = {"a": {"one": x, "two": x}, "b": {"three": None, "four": x}}
    fig = samples_grid(density_grid(mix, cells=30), rows, y)
    axes = fig.axes
    assert not axes[2].axison and axes[3].axison and not axes[2].collections
    plt.close(fig)


# ---- chapters 7 and 8: class_grids and curve_panels ------------------------------------------------

from diffcourse.plots import class_grids, curve_panels  # noqa: E402


def test_class_grids_shows_the_first_images_of_every_class():
    x = torch.linspace(-1, 1, 3 * 5 * 4).reshape(15, 1, 2, 2)  # 3 classes, 5 images each
    fig = class_grids({0.5: x, 2.0: -x}, 3, per_row=2, xlabel="2 samples", title="g = {:g}")
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["g = 0.5", "g = 2"]
    shown = axes[0].get_images()[0].get_array()
    assert shown.shape == (3 * 4, 2 * 4)  # 3 rows of 2 tiles, each 2x2 with a 1-pixel gutter
    assert shown[1 + 4, 1 + 4] == pytest.approx(x[5 + 1, 0, 0, 0].item())  # class 1, image 1
    plt.close(fig)
    with pytest.raises(TypeError, match="panels"):
        class_grids([x], 3)
    with pytest.raises(ValueError, match="multiple of rows"):
        class_grids({"a": x[:14]}, 3)
    with pytest.raises(ValueError, match="per_row"):
        class_grids({"a": x}, 3, per_row=6)


def test_curve_panels_draws_lines_error_bars_and_references():
    panels = [
        {"a": ([1, 2, 3], [0.1, 0.2, 0.3], "--o"), "b": ([1, 2], [(1.0, 0.1), (2.0, 0.2)])},
        {"c": ([1, 10], [5.0, 6.0], {"fmt": "k*", "ms": 10})},
    ]
    refs = {1: (5.5, "ref", {"color": "k"})}
    axes = curve_panels(panels, "x", ["y0", "y1"], refs, logx=True, logy=[1], legend_title="T")
    assert [ax.get_ylabel() for ax in axes] == ["y0", "y1"] and axes[0].get_xlabel() == "x"
    line = axes[0].get_lines()[0]
    assert list(line.get_ydata()) == [0.1, 0.2, 0.3] and line.get_linestyle() == "--"
    bars = axes[0].containers[0]  # the error bars of "b"
    assert list(bars.lines[0].get_ydata()) == [1.0, 2.0]
    assert axes[1].get_yscale() == "log" and axes[0].get_xscale() == "log"
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["c", "ref"]
    # each legend under its panel's x label, covering none of its curves
    renderer = axes[0].figure.canvas.get_renderer()
    for ax in axes:
        legend, label = ax.get_legend().get_window_extent(renderer), ax.xaxis.label
        assert legend.y1 <= label.get_window_extent(renderer).y0
        assert legend.y1 < ax.get_window_extent(renderer).y0
    plt.close(axes[0].figure)
    with pytest.raises(ValueError, match="ylabels"):
        curve_panels(panels, "x", ["y0"])
    with pytest.raises(ValueError, match="panel index"):
        curve_panels(panels, "x", ["y0", "y1"], {2: (1.0, "r")})
    with pytest.raises(ValueError, match="curve 'a'"):
        curve_panels([{"a": ([1, 2], [1.0])}], "x", ["y"])
    with pytest.raises(ValueError, match="panels\\[0\\] must hold at least one curve"):
        curve_panels([{}], "x", ["y"])
    with pytest.raises(TypeError, match="panels\\[0\\] must be a dict"):
        curve_panels([[1.0]], "x", ["y"])
    with pytest.raises(ValueError, match="panels must hold at least one"):
        curve_panels([], "x", [])


def test_levels_sweep_draws_each_metric_at_its_levels():
    from diffcourse.plots import levels_sweep

    def row(s, eta):  # distinct numbers per metric, level and eta
        return {k: i + s / 100 + eta / 10 for i, k in enumerate(("d1", "spread1", "d3", "spread3"))}

    mixture = {(s, e): row(s, e) for s in (20, 5, 10) for e in (0.0, 1.0)}
    digits = {(s, e): {"diversity": s / 100 + e} for s in (10, 25) for e in (0.0, 1.0)}
    axes = levels_sweep(mixture, digits, {"diversity": 0.9}, 0.7)
    distance, spread, diversity = axes
    lines = {ln.get_label(): ln for ln in distance.get_lines()}
    # ascending levels; gamma = 3's distance is "d3" at eta = 1, dashed
    line = lines["eta = 1, gamma = 3"]
    assert list(line.get_xdata()) == [5, 10, 20] and line.get_linestyle() == "--"
    assert list(line.get_ydata()) == [2 + s / 100 + 0.1 for s in (5, 10, 20)]
    ys = {ln.get_label(): list(ln.get_ydata()) for ln in spread.get_lines()}
    assert ys["eta = 0, gamma = 1"] == [1 + s / 100 for s in (5, 10, 20)]
    assert ys["DDPM, gamma = 3"] == [0.7, 0.7]  # the reference line
    ys = {ln.get_label(): list(ln.get_ydata()) for ln in diversity.get_lines()}
    assert ys["DDIM eta = 1"] == [1.1, 1.25] and ys["DDPM, 1,000 levels"] == [0.9]
    assert all(ax.get_xscale() == "log" and ax.get_xlabel() == "levels visited" for ax in axes)
    plt.close(distance.figure)
    with pytest.raises(ValueError, match="mixture must hold at least one"):
        levels_sweep({}, digits, {"diversity": 0.9}, 0.7)
    with pytest.raises(ValueError, match="same levels"):
        levels_sweep({**mixture, (40, 0.0): row(40, 0.0)}, digits, {"diversity": 0.9}, 0.7)
    with pytest.raises(ValueError, match="has no spread3"):
        levels_sweep({**mixture, (5, 0.0): {"d1": 1, "spread1": 1, "d3": 1}}, digits, {}, 0.7)
    with pytest.raises(ValueError, match="eta 0 or 1"):
        levels_sweep(mixture, {(10, 0.5): {"diversity": 1.0}}, {"diversity": 0.9}, 0.7)
    with pytest.raises(ValueError, match="ddpm has no diversity"):
        levels_sweep(mixture, digits, {}, 0.7)
    with pytest.raises(TypeError, match="ddpm"):
        levels_sweep(mixture, digits, [0.9], 0.7)
    with pytest.raises(TypeError, match="ddpm_spread"):
        levels_sweep(mixture, digits, {"diversity": 0.9}, "0.7")


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
    assert titles[1] == "exact, $\\gamma$ = 4\nagreement 0.90\nspread 0.60"
    assert titles[2].startswith("CFG, $\\gamma$ = 1\n")
    plt.close(fig)
    # a kind run at fewer gammas: its row keeps the columns, with an empty panel where it did not run
    del values["CFG", 0.0], values["CFG", 4.0]
    fig = sweep_grid(grid, samples, values, ("agreement", "spread"), y)
    assert fig.axes[0].get_title().startswith("exact, $\\gamma$ = 0\n")
    assert [ax.axison for ax in fig.axes] == [True] * 3 + [False, True, False]
    assert fig.axes[4].get_title() == "CFG, $\\gamma$ = 1\nagreement 0.60\nspread 0.90"
    plt.close(fig)
    with pytest.raises(ValueError, match="measures"):
        sweep_grid(grid, samples, values, ("agreement",))
    with pytest.raises(ValueError, match="values must hold at least one"):
        sweep_grid(grid, samples, {}, ("a", "b"))
    with pytest.raises(TypeError, match="values must be a dict"):
        sweep_grid(grid, samples, [], ("a", "b"))


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


def test_figures_fit_the_books_column_with_readable_text():
    """The page shows a figure at most 688 px wide (a 1280-px window): drawn at most WIDTH inches
    wide at 100 dpi and with no text under 8 points, its text shows at least 8 px high. Before,
    lab 4's sweep (five columns of 3.2 inches) showed its titles 5 px high."""
    from matplotlib.text import Text

    from diffcourse import explore, plots, schedules

    mix = three_blobs()
    grid = density_grid(mix, cells=30)
    x, y = mix.sample(60, generator=torch.Generator().manual_seed(0))
    images = torch.rand(40, 1, 8, 8) * 2 - 1
    sweep = {("exact", float(g)): (1.0, 1.0) for g in range(6)}
    panel = {"a": ([1, 2], [1.0, 2.0])}
    figures = {
        "forward_process": plots.forward_process(
            mix, schedules.cosine_schedule(20), list(range(8)), n=20, show=False
        ),
        "sweep_grid": plots.sweep_grid(
            grid, {k: x for k in sweep}, sweep, ("agreement", "spread"), y, show=False
        ),
        "class_grids": plots.class_grids({i: images for i in range(5)}, 10, 4, show=False),
        "curve_panels": plots.curve_panels([panel] * 4, "gamma", ["a"] * 4, show=False)[0].figure,
        "class_panels": plots.class_panels(
            {i: (x, y) for i in range(5)}, 3, legend="{}", show=False
        ),
        "plot_guidance": explore.plot_guidance(
            mix, schedules.cosine_schedule(20), 0, 4.0, n=20, cells=20
        ),
    }
    for name, fig in figures.items():
        assert fig.get_figwidth() <= plots.WIDTH + 1e-9, name
        fig.canvas.draw()
        sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
        assert min(sizes) >= 8, (name, min(sizes))
        plt.close(fig)


def test_plots_refuse_no_images_no_levels_and_no_errors_by_name():
    """image_panels failed with a ZeroDivisionError for a panel of no images, animate_images drew
    empty grids, error_over_levels failed in matplotlib's log scale for no level, and
    score_error_curve blamed skip for no error."""
    from diffcourse.plots import error_over_levels, image_panels, score_error_curve

    plt.close("all")
    none = torch.empty(0, 1, 8, 8)
    with pytest.raises(ValueError, match=r"^panels\['a'\] must hold at least one sample"):
        image_panels({"a": none}, 1)
    with pytest.raises(ValueError, match="^panels: every frame must hold at least one image"):
        animate_images({"a": [none, none]}, 1)
    with pytest.raises(ValueError, match="^levels must hold at least one value"):
        error_over_levels([], {"a": []})
    with pytest.raises(ValueError, match="^errors must hold at least one sample"):
        score_error_curve(torch.empty(0), 0)
    assert not plt.get_fignums()  # each refused before a figure was made
