"""The course's recurring pictures: samples over the contour lines of a 2-D mixture's density,
grids of images with one row per class, and both as animations a reader scrubs with a slider
(frames collected by a sampler's ``callback``; :class:`FrameCollector`, :func:`animate_samples`,
:func:`animate_images`); the labs' curves against t or gamma (:func:`line_plot`) and grids of
sample panels (:func:`samples_grid`).

In a notebook each drawing function shows its figure as soon as it is drawn, once (no
``plt.show()`` needed); ``show=False`` leaves it open for the caller to add to."""

from __future__ import annotations

import base64
import functools
import inspect
import io
import re
import tempfile
from pathlib import Path
from typing import Optional

import torch

from .checks import (
    check_bool,
    check_callable,
    check_int,
    check_ints,
    check_levels,
    check_mapping,
    check_mixture,
    check_real,
    check_reals,
    check_sequence,
    check_strs,
    check_tensor,
)
from .mixture import GaussianMixture


class _QuietList(list):
    """A list of axes that shows nothing as a cell's last value (see :func:`_shown_once`)."""

    def _ipython_display_(self) -> None:
        pass


def _show_nothing() -> None:
    pass


def _inline_backend() -> bool:
    """True in a notebook kernel drawing with matplotlib's inline backend (Jupyter, Colab, nbval,
    the book build)."""
    from .report import _in_kernel

    if not _in_kernel():
        return False
    import matplotlib

    return "inline" in matplotlib.get_backend()


_drawing = [0]  # how many drawing functions are running: only the outermost one shows


# The book's column is 688 pixels wide in a 1280-pixel window, and matplotlib draws at 100 dpi: a
# wider figure is shrunk onto the page, its text with it (a 16-inch figure's 9-point titles showed 5
# pixels high). Drawn at most WIDTH inches wide, a figure is shrunk to no less than 0.72 of its
# size, so the course's text, 8 points or more, shows at least 8 pixels high.
WIDTH = 9.5


def _subplots(rows: int = 1, cols: int = 1, *, figsize, **kwargs):
    """``plt.subplots`` with ``figsize`` scaled down, its shape kept, to at most :data:`WIDTH`
    inches wide."""
    import matplotlib.pyplot as plt

    width, height = figsize
    k = min(1.0, WIDTH / width)
    return plt.subplots(rows, cols, figsize=(width * k, height * k), **kwargs)


def _check_layout(given: dict) -> None:
    """What the drawing functions share, checked before anything is drawn: ``ax``, None or a
    matplotlib Axes; ``figsize``, a pair of positive sizes in inches; ``size``, such a pair or one
    size (a panel's); ``row_labels``, a list of str."""
    from matplotlib.axes import Axes

    ax = given.get("ax")
    if ax is not None and not isinstance(ax, Axes):
        raise TypeError(f"ax must be a matplotlib Axes or None, got {type(ax).__name__}")
    for name in ("figsize", "size"):
        value = given.get(name)
        if value is None:
            continue
        if name == "size" and not isinstance(value, (tuple, list)):
            check_real(value, name, low=0, low_open=True)
        elif len(check_reals(value, name, low=0, low_open=True)) != 2:
            raise ValueError(f"{name} must be (width, height) in inches, got {value!r}")
    if given.get("row_labels") is not None:
        check_strs(given["row_labels"], "row_labels")


def _shown_once(draw):
    """Show, in a notebook with the inline backend, the figure that ``draw`` makes as soon as it is
    drawn, and mark what ``draw`` returns (the figure, its axes or a list of axes) to show nothing
    as a cell's last value, so a lab ends a cell with ``plots.forward_process(...)``: no
    ``plt.show()``, and no second copy of the figure. (A closing ";" would not hide that copy under
    nbval, whose outputs the book renders.) Elsewhere (a script, the tests) nothing changes. A
    figure whose axes the caller passed in (``ax=``), or one drawn inside another drawing
    function, is the caller's to show. A shown figure is final: to draw on it first, pass
    ``show=False`` (every drawing function takes it) and call ``plt.show()`` after."""
    signature = inspect.signature(draw)
    takes_ax = "ax" in signature.parameters

    @functools.wraps(draw)
    def wrapper(*args, show: bool = True, **kwargs):
        check_bool(show, "show")
        _check_layout(signature.bind_partial(*args, **kwargs).arguments)
        _drawing[0] += 1
        try:
            out = draw(*args, **kwargs)
        finally:
            _drawing[0] -= 1
        callers_ax = takes_ax and signature.bind(*args, **kwargs).arguments.get("ax") is not None
        if not show or _drawing[0] or callers_ax or not _inline_backend():
            return out
        import matplotlib.pyplot as plt
        from IPython.display import display
        from matplotlib.figure import Figure

        first = out[0] if isinstance(out, list) else out
        fig = first if isinstance(first, Figure) else first.figure
        display(fig)
        plt.close(fig)
        if isinstance(out, list):
            return _QuietList(out)
        out._ipython_display_ = _show_nothing
        return out

    wrapper.shown_once = True
    return wrapper


def density_grid(
    mixture: GaussianMixture, lim: float = 3.5, cells: int = 200, alpha_bar: Optional[float] = None
):
    """(x1, x2, p) on a cells x cells grid over [-lim, lim]^2, on the CPU, ready for ``contour`` or
    ``contourf``. p is the mixture's density, or with ``alpha_bar`` the density of the noisy
    x_t = sqrt(alpha_bar) x_0 + sqrt(1 - alpha_bar) eps (``mixture.diffuse(alpha_bar)``): the
    forward process's pictures of chapter 1."""
    if check_mixture(mixture).dim != 2:
        raise ValueError(f"mixture must be 2-D for density_grid, got dim={mixture.dim}")
    lim = check_real(lim, "lim", low=0, low_open=True)
    cells = check_int(cells, "cells", low=2)
    if alpha_bar is not None:
        mixture = mixture.diffuse(alpha_bar)
    axis = torch.linspace(-lim, lim, cells, dtype=mixture.dtype, device=mixture.device)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    p = mixture.log_prob(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(cells, cells)
    return gx.cpu(), gy.cpu(), p.cpu()


def samples_over_density(
    ax,
    grid,
    x: torch.Tensor,
    y: Optional[torch.Tensor] = None,
    title: str = "",
    per_class: int = 600,
    lim: float = 3.5,
    color: Optional[str] = None,
    filled: bool = False,
) -> None:
    """Scatter ``x`` (coloured by the asked-for label ``y``, at most ``per_class`` points each) over
    the black contour lines of ``grid`` (from :func:`density_grid`), on a square of half-width lim.
    ``filled=True`` shades the density instead (blue, 20 levels) under small black dots, as the
    forward-process pictures of chapter 1 do."""
    check_tensor(x, "x", floating=True, shape=(None, 2))
    if y is not None:
        check_tensor(y, "y", floating=False, shape=(x.shape[0],))
    per_class = check_int(per_class, "per_class", low=1)
    x = x.detach().cpu()
    if check_bool(filled, "filled"):
        ax.contourf(*grid, levels=20, cmap="Blues")
    else:
        ax.contour(*grid, levels=6, colors="black", linewidths=0.6, alpha=0.7, zorder=3)
    if y is None:
        ax.scatter(
            *x[:per_class].T,
            s=1 if filled else 2,
            alpha=0.3 if filled else 0.6,
            color=color or ("k" if filled else "C0"),
        )
    else:
        y = y.cpu()
        for c in torch.unique(y).tolist():
            ax.scatter(
                *x[y == c][:per_class].T, s=2, alpha=0.6, color=f"C{c}", label=f"asked y = {c}"
            )
    ax.set_title(title, fontsize=9)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")


def _tiles(x: torch.Tensor, rows: int):
    """Images [N, 1, H, W] in [-1, 1] as one array of ``rows`` rows, with 1-pixel white gutters."""
    n, _, h, w = x.shape
    cols = n // rows
    tiles = torch.nn.functional.pad(x.detach().cpu().clamp(-1, 1), (1, 1, 1, 1), value=-1)
    return (
        tiles.reshape(rows, cols, h + 2, w + 2)
        .permute(0, 2, 1, 3)
        .reshape(rows * (h + 2), cols * (w + 2))
        .numpy()
    )


def _grid_columns(x: torch.Tensor, rows: int, name: str = "x") -> int:
    """The columns of a grid of ``rows`` rows of images ``x`` [N, 1, H, W] (N a multiple of rows)."""
    check_tensor(x, name, floating=True, nonempty=True)  # a grid of no column has no width
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] % rows:
        raise ValueError(
            f"{name} must be [N, 1, H, W] with N a multiple of rows={rows}, got {tuple(x.shape)}"
        )
    return x.shape[0] // rows


def image_grid(
    ax, x: torch.Tensor, rows: int, title: str = "", row_labels: Optional[list] = None
) -> None:
    """Show images ``x`` [N, 1, H, W] in [-1, 1] as a grid of ``rows`` rows, in order (row r holds the
    r-th block of N / rows images: one row per class when x is sorted by label), dark ink on white."""
    rows = check_int(rows, "rows", low=1)
    _grid_columns(x, rows)
    h = x.shape[2]
    ax.imshow(_tiles(x, rows), cmap="gray_r", vmin=-1, vmax=1, interpolation="nearest")
    labels = row_labels or list(range(rows))
    ax.set_yticks([(h + 2) * (r + 0.5) for r in range(rows)], labels, fontsize=8)
    if not any(str(label) for label in labels):  # rows left unlabelled: no tick marks either
        ax.tick_params(axis="y", length=0)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9)


# Animations a reader scrubs with a slider: matplotlib's JavaScript HTML animation embeds every frame
# as a PNG in the page, so it plays offline and from any static host, with no kernel behind it.


class FrameCollector:
    """A sampler callback ``callback(step, x_t, x0_hat)`` that keeps a CPU copy of what it sees.

    Every ``every``-th call is kept (the first call always is): ``x_t`` (the batch entering the
    step), ``x0_hat`` (the clean estimate at that step) and ``times``, the book's t = step + 1.
    After sampling, :meth:`finish` appends the finished samples as the frame at t = 0::

        keep = FrameCollector(every=5)
        x = ddpm_sample(eps_fn, noise, schedule, callback=keep)
        keep.finish(x)                      # keep.x_t[-1] is x, keep.times[-1] == 0

    Copying to the CPU waits for the device at each kept step; that is the price of a picture,
    paid only when a callback is given.
    """

    def __init__(self, every: int = 1) -> None:
        self.every = check_int(every, "every", low=1)
        self.calls = 0
        self.times: list = []
        self.x_t: list = []
        self.x0_hat: list = []

    def __call__(self, step: int, x_t: torch.Tensor, x0_hat: torch.Tensor) -> None:
        if self.calls % self.every == 0:
            self.times.append(int(step) + 1)
            self.x_t.append(x_t.detach().to("cpu", torch.float32, copy=True))
            self.x0_hat.append(x0_hat.detach().to("cpu", torch.float32, copy=True))
        self.calls += 1

    def finish(self, x0: torch.Tensor) -> "FrameCollector":
        """Append the finished samples ``x0`` as the last frame (t = 0); returns the collector."""
        if not isinstance(x0, torch.Tensor):
            raise TypeError(f"x0 must be a tensor, got {type(x0).__name__}")
        if self.x_t and x0.shape != self.x_t[-1].shape:
            raise ValueError(
                f"x0 has shape {tuple(x0.shape)}, the frames {tuple(self.x_t[-1].shape)}"
            )
        x0 = x0.detach().to("cpu", torch.float32, copy=True)
        self.times.append(0)
        self.x_t.append(x0)
        self.x0_hat.append(x0)
        return self


class JSAnimation:
    """An animation as self-contained HTML (frames embedded as PNG, controls in plain JavaScript).
    The last expression of a notebook cell shows it: Jupyter and myst-nb's pages take its
    ``_repr_html_`` (a text/html output)."""

    def __init__(self, html: str, frames: int) -> None:
        if not isinstance(html, str):
            raise TypeError(f"html must be a str, got {type(html).__name__}")
        self.html = html
        self.frames = check_int(frames, "frames", low=1)

    @property
    def nbytes(self) -> int:
        """The size of the HTML, frames included, in bytes: what the page and the notebook carry."""
        return len(self.html.encode("utf-8"))

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<JSAnimation: {self.frames} frames, {self.nbytes / 1000:.0f} kB>"


# matplotlib's controls draw their icons with Font Awesome from a CDN; offline that request fails
# and the buttons are blank. Plain characters instead (each button keeps its title and aria-label).
_ICONS = {
    "fa-minus": "&minus;",
    "fa-fast-backward": "&#8676;",
    "fa-step-backward": "&lsaquo;",
    "fa-play fa-flip-horizontal": "&#9664;",
    "fa-pause": "&#10074;&#10074;",
    "fa-play": "&#9654;",
    "fa-step-forward": "&rsaquo;",
    "fa-fast-forward": "&#8677;",
    "fa-plus": "+",
}


_FRAME = re.compile(r'(frames\[\d+\] = "data:image/png;base64,)((?:[^"\\]|\\\n)*)(")')


def _small_png(match: "re.Match", colors: int = 48) -> str:
    """One embedded frame re-encoded as a PNG of ``colors`` colours: a third of the size of
    matplotlib's truecolour frame, with no visible change to dots, lines and text on white."""
    from PIL import Image

    raw = base64.b64decode(match.group(2).replace("\\\n", ""))
    out = io.BytesIO()
    Image.open(io.BytesIO(raw)).convert("RGB").quantize(colors=colors).save(
        out, "png", optimize=True
    )
    return match.group(1) + base64.b64encode(out.getvalue()).decode("ascii") + match.group(3)


def _offline_html(html: str) -> str:
    """matplotlib's jshtml made small and offline: each frame re-encoded with a small palette, the
    Font Awesome <link> to a CDN dropped and each icon replaced by a character."""
    html, frames = _FRAME.subn(_small_png, html)
    if not frames:
        raise RuntimeError(
            "matplotlib's animation HTML has changed: update diffcourse.plots._FRAME"
        )
    html, links = re.subn(
        r'<link rel="stylesheet"\s+href="https?://[^"]*font-awesome[^"]*">', "", html
    )
    for name, char in _ICONS.items():
        html = html.replace(f'<i class="fa {name}"></i>', char)
    if links != 1 or "<i class=" in html or re.search(r'(src|href)="(https?:)?//', html):
        raise RuntimeError(
            "matplotlib's animation HTML has changed: update diffcourse.plots._offline_html"
        )
    return html


def _pick(n: int, max_frames: int) -> list:
    """At most ``max_frames`` indices into n frames, evenly spread, first and last included."""
    if n <= max_frames:
        return list(range(n))
    return torch.linspace(0, n - 1, max_frames).round().long().unique().tolist()


def _check_panels(panels, ndim: int, what: str) -> list:
    """The panels as (title, list of frames): a non-empty mapping, equal frame counts and shapes."""
    check_mapping(panels, "panels", "dict title -> frames", "panel", kind=dict)
    out = []
    for title, frames in panels.items():
        if isinstance(frames, FrameCollector):
            frames = frames.x_t
        if not isinstance(frames, (list, tuple)) or not all(
            isinstance(f, torch.Tensor) for f in frames
        ):
            raise TypeError(f"panels[{title!r}] must be a FrameCollector or a list of tensors")
        frames = list(frames)
        if not frames:
            raise ValueError(f"panels[{title!r}] must hold at least one frame")
        if frames[0].ndim != ndim or any(f.shape != frames[0].shape for f in frames):
            raise ValueError(
                f"panels[{title!r}]: every frame must be {what} of one shape, "
                f"got {[tuple(f.shape) for f in frames[:3]]}..."
            )
        out.append((str(title), frames))
    if len({len(f) for _, f in out}) != 1:
        raise ValueError(
            f"panels must hold the same number of frames, got {[len(f) for _, f in out]}"
        )
    return out


def _check_times(times, panels, n: int) -> Optional[list]:
    if times is None:
        first = next(iter(panels.values()))
        return list(first.times) if isinstance(first, FrameCollector) else None
    times = check_sequence(times, "times", "the frames' t", empty=True)
    if len(times) != n:
        raise ValueError(f"times must have one entry per frame ({n}), got {len(times)}")
    return times


def _check_frames_args(max_frames: int, dpi: int, interval: int) -> None:
    check_int(max_frames, "max_frames", low=2)
    check_int(dpi, "dpi", low=20)
    check_int(interval, "interval", low=1)


def _to_html(fig, update, frames: list, interval: int) -> JSAnimation:
    """Render ``update(i)`` for each i in ``frames`` with matplotlib's HTMLWriter (what
    ``Animation.to_jshtml`` writes: frames embedded, JavaScript controls), then close the figure so
    that a notebook does not show it a second time as a still. One draw per frame: the layout is
    computed once, on the first frame, and ``FuncAnimation`` would draw each frame three times."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import HTMLWriter

    try:
        update(frames[0])
        fig.canvas.draw()  # lay the figure out once; the frames only move data
        fig.set_layout_engine("none")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "animation.html")
            writer = HTMLWriter(fps=1000 / interval, embed_frames=True, default_mode="once")
            with writer.saving(fig, path, fig.dpi):
                for i in frames:
                    update(i)
                    writer.grab_frame()
            html = path.read_text(encoding="utf-8")
    finally:
        plt.close(fig)
    return JSAnimation(_offline_html(html), len(frames))


def _time_label(times: Optional[list], i: int, n: int) -> str:
    if times is None:
        return f"frame {i + 1} of {n}"
    return "t = 0: the samples" if times[i] == 0 else f"t = {times[i]}"


def animate_samples(
    panels: dict,
    grid,
    y: Optional[torch.Tensor] = None,
    times=None,
    max_frames: int = 30,
    per_class: int = 120,
    lim: float = 3.5,
    dpi: int = 100,
    interval: int = 150,
) -> JSAnimation:
    """2-D samples travelling from noise to data, one panel per run side by side (for instance
    one per gamma, from the same starting noise), over the contour lines of ``grid``.

    Args:
        panels: title -> a :class:`FrameCollector` (its ``x_t``) or a list of [N, 2] tensors, the
            same number of frames in every panel.
        grid: the density's contour grid, from :func:`density_grid`.
        y: the label each sample was asked for, [N] (colours); None draws one colour.
        times: the book's t of each frame; by default the first collector's ``times``.
        max_frames: at most this many frames, evenly spread, the first and the last kept.
        per_class: at most this many points per class and panel (keeps the PNGs small).
    """
    runs = _check_panels(panels, 2, "[N, 2]")
    n, points = len(runs[0][1]), runs[0][1][0].shape[0]
    if runs[0][1][0].shape[1] != 2:
        raise ValueError(f"panels: frames must be [N, 2] samples, got {tuple(runs[0][1][0].shape)}")
    times = _check_times(times, panels, n)
    _check_frames_args(max_frames, dpi, interval)
    if y is not None:
        check_tensor(y, "y", floating=False, shape=(points,))
    per_class = check_int(per_class, "per_class", low=1)
    lim = check_real(lim, "lim", low=0, low_open=True)

    labels = torch.zeros(points, dtype=torch.long) if y is None else y.detach().cpu()
    keep = [
        (c, (labels == c).nonzero().flatten()[:per_class]) for c in torch.unique(labels).tolist()
    ]
    fig, axes = _subplots(
        1,
        len(runs),
        figsize=(2.2 * len(runs) + 0.3, 2.6),
        dpi=dpi,
        squeeze=False,
        sharex=True,
        sharey=True,
        constrained_layout=True,
    )
    dots = []
    for ax, (title, frames) in zip(axes[0], runs):
        ax.contour(*grid, levels=6, colors="black", linewidths=0.6, alpha=0.7, zorder=3)
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), xlabel="$x_1$")
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.set_aspect("equal")
        dots.append(
            [
                ax.scatter(
                    *frames[0][idx].T,
                    s=4,
                    alpha=0.7,
                    color=f"C{c}" if y is not None else "C0",
                    label=f"asked y = {c}",
                )
                for c, idx in keep
            ]
        )
    axes[0][0].set_ylabel("$x_2$")
    if y is not None:  # which colour is which label
        axes[0][-1].legend(fontsize=8, markerscale=2, loc="lower right", framealpha=0.9)
    caption = fig.suptitle("", fontsize=10)

    def update(i: int):
        for (_, frames), row in zip(runs, dots):
            for (_, idx), dot in zip(keep, row):
                dot.set_offsets(frames[i][idx].numpy())
        caption.set_text(_time_label(times, i, n))
        return [d for row in dots for d in row] + [caption]

    return _to_html(fig, update, _pick(n, max_frames), interval)


def animate_images(
    panels: dict,
    rows: int,
    times=None,
    row_labels: Optional[list] = None,
    max_frames: int = 30,
    dpi: int = 100,
    interval: int = 150,
    ylabel: str = "",
) -> JSAnimation:
    """Image grids denoising step by step, one panel per entry of ``panels`` side by side (for
    instance ``{"x_t": keep.x_t, "x0_hat": keep.x0_hat}`` from one :class:`FrameCollector`).

    Args:
        panels: title -> a FrameCollector (its ``x_t``) or a list of [N, 1, H, W] tensors in
            [-1, 1], the same number of frames in every panel; shown as :func:`image_grid` shows
            them (``rows`` rows, one per class when the batch is sorted by label).
        times: the book's t of each frame; by default the first collector's ``times``.
        row_labels: the rows' tick labels (default 0, 1, ...), named by ``ylabel`` on the first
            panel (for instance "asked digit y").
        max_frames: at most this many frames, evenly spread, the first and the last kept.
    """
    runs = _check_panels(panels, 4, "[N, 1, H, W]")
    n, shape = len(runs[0][1]), runs[0][1][0].shape
    rows = check_int(rows, "rows", low=1)
    if not shape[0]:  # checked before a figure is made, as image_grid would refuse it
        raise ValueError(f"panels: every frame must hold at least one image, got {tuple(shape)}")
    if shape[1] != 1 or shape[0] % rows:
        raise ValueError(f"rows={rows} must divide N, frames [N, 1, H, W], got {tuple(shape)}")
    times = _check_times(times, panels, n)
    _check_frames_args(max_frames, dpi, interval)

    cols = shape[0] // rows
    width = max(2.0, 0.28 * cols + 0.6)
    fig, axes = _subplots(
        1,
        len(runs),
        figsize=(width * len(runs), 0.28 * rows + 0.9),
        dpi=dpi,
        squeeze=False,
        constrained_layout=True,
    )
    shown = []
    for ax, (title, frames) in zip(axes[0], runs):
        image_grid(ax, frames[0], rows, title=title, row_labels=row_labels)
        shown.append(ax.get_images()[0])
    axes[0][0].set_ylabel(ylabel, fontsize=8)
    caption = fig.suptitle("", fontsize=10)

    def update(i: int):
        for (_, frames), im in zip(runs, shown):
            im.set_data(_tiles(frames[i], rows))
        caption.set_text(_time_label(times, i, n))
        return shown + [caption]

    return _to_html(fig, update, _pick(n, max_frames), interval)


@_shown_once
def line_plot(
    x,
    curves,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    ax=None,
    styles=None,
    figsize=(6.5, 4.0),
    legend: Optional[dict] = None,
):
    """``curves`` (label -> values over ``x``) as labelled lines with a legend, on ``ax`` or on a new
    figure; axis labels and title as given, log axes on request; ``styles`` (label -> matplotlib
    format string, e.g. "--o" or "C1o--") where wanted; ``legend``: options for the legend (e.g.
    ``dict(ncol=2, title="gamma")``). Returns the axes. The labs' curves against t or gamma."""
    check_mapping(curves, "curves", "dict label -> values", "curve", kind=dict)
    for name, value in (("xlabel", xlabel), ("ylabel", ylabel), ("title", title)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if legend is not None and not isinstance(legend, dict):
        raise TypeError(f"legend must be a dict of legend options, got {type(legend).__name__}")
    check_bool(logx, "logx"), check_bool(logy, "logy")
    if styles is not None and not isinstance(styles, dict):
        raise TypeError(f"styles must be a dict label -> style, got {type(styles).__name__}")
    x = [float(v) for v in x]
    if ax is None:
        _, ax = _subplots(figsize=figsize)
    for label, values in curves.items():
        values = [float(v) for v in values]
        if len(values) != len(x):
            raise ValueError(f"curves[{label!r}] has {len(values)} values for {len(x)} x values")
        ax.plot(x, values, (styles or {}).get(label, "-"), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.legend(**{"fontsize": 8, **(legend or {})})
    ax.figure.tight_layout()
    return ax


@_shown_once
def samples_grid(
    grid,
    rows,
    y: Optional[torch.Tensor] = None,
    per_class: int = 600,
    size: float = 3.2,
    ring: Optional[torch.Tensor] = None,
):
    """A grid of :func:`samples_over_density` panels, one row per entry of ``rows`` (row name ->
    {panel title: samples [N, 2], or None for an empty panel}, the same number of panels in every
    row), over ``grid``'s contour lines. With ``y`` (the asked labels of every panel's samples)
    points are coloured by label, with a legend above the grid; without, each row has
    its own colour. ``ring``: points [K, 2] (e.g. the asked-for component's mean) circled in
    magenta, a colour no label takes, in every panel. The outer axes are labelled x_1 and x_2, and
    so is the x axis of every panel above an empty one; all span the grid's square. Returns the
    figure."""
    if ring is not None:
        ring = check_tensor(ring, "ring", floating=True, shape=(None, 2)).detach().cpu()
    check_mapping(rows, "rows", "dict row name -> dict title -> samples", "row", kind=dict)
    for name, row in rows.items():
        check_mapping(row, f"rows[{name!r}]", "dict title -> samples", "panel", kind=dict)
    cols = {len(r) for r in rows.values()}
    if len(cols) != 1:
        raise ValueError(f"rows must have the same number of panels, got {sorted(cols)}")
    cols, lim = cols.pop(), float(grid[0].max())  # the half-width density_grid was given
    # square panels, narrower where the row would be wider than WIDTH, each row with room for its
    # titles' lines and the x axis below
    size = min(size, WIDTH / cols)
    lines = max(str(title).count("\n") + 1 for row in rows.values() for title in row)
    fig, axes = _subplots(
        len(rows),
        cols,
        figsize=(size * cols, (size + 0.17 * lines + 0.3) * len(rows) + 0.3),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for i, panels in enumerate(rows.values()):
        for j, (title, x) in enumerate(panels.items()):
            if x is None:  # an empty panel (nothing sampled there): no axes
                axes[i, j].axis("off")
                continue
            samples_over_density(
                axes[i, j],
                grid,
                x,
                y,
                title,
                per_class=per_class,
                lim=lim,
                color=None if y is not None else f"C{i}",
            )
            if ring is not None:
                axes[i, j].scatter(*ring.T, s=200, facecolor="none", edgecolor="magenta", zorder=4)
    # the outer axes are labelled, and so is every panel above an empty one (shared axes hide
    # the tick labels of inner panels, which would leave a column without any); a panel right of
    # an empty one is not: its y axis is the first column's, and the width is better spent on
    # the panels than on gaps wide enough for more labels
    empty = [[x is None for x in panels.values()] for panels in rows.values()]
    for i, j in ((i, j) for i in range(len(rows)) for j in range(cols) if not empty[i][j]):
        if i == len(rows) - 1 or empty[i + 1][j]:
            axes[i, j].set_xlabel("$x_1$")
            axes[i, j].tick_params(labelbottom=True)
        if j == 0:
            axes[i, j].set_ylabel("$x_2$")
    top = 1.0
    if y is not None:  # which colour is which label, above the grid: over a panel it hid points
        drawn = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
        fig.legend(
            list(drawn.values()), list(drawn), markerscale=5, fontsize=8, loc="upper center", ncol=9
        )
        top = 1 - 0.25 / fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, top))
    return fig


@_shown_once
def error_over_levels(levels, errors: dict, title: str = "", ax=None):
    """Relative score errors against the level t (1-based on the axis), both axes logarithmic, one
    line per entry of ``errors`` ({label: values at ``levels``, 0-based}; at most four), on ``ax``
    or a new figure: chapter 1's picture of a learned score held against the exact one, here for
    any model. Returns the axes."""
    if not isinstance(errors, dict):
        raise TypeError(f"errors must be a dict label -> values, got {type(errors).__name__}")
    if not 0 < len(errors) <= 4:  # one line style each
        raise ValueError(f"errors must hold one to four curves, got {len(errors)}")
    levels = check_ints(levels, "levels", low=0)  # none failed in matplotlib's log scale
    return line_plot(
        [t + 1 for t in levels],
        errors,
        "level t",
        "RMS(learned - exact) / RMS(exact)",
        title,
        logx=True,
        logy=True,
        ax=ax,
        styles=dict(zip(errors, ("o-", "s--", "^:", "d-."))),
        figsize=(6, 3.5),
    )


# ---- chapters 1 and 2: the forward process, a score error curve, point clouds, classes -----------


def _check_panels_dict(panels, what: str) -> None:
    check_mapping(panels, "panels", f"dict title -> {what}", "panel", kind=dict)


@_shown_once
def forward_process(mixture: GaussianMixture, schedule, steps, n: int = 2000, generator=None):
    """The forward process in pictures, one panel per step of ``steps`` (0-based): the exact density
    of x_t (shaded, ``mixture.diffuse(alpha_bar_t)``, :func:`density_grid`) under n draws from
    q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) (Luo eq. 70) of the same n data
    points x_0. The data points, then each panel's noise, come from ``generator`` in that order.
    Returns the figure."""
    from .schedules import q_sample

    steps, n = check_levels(schedule, steps), check_int(n, "n", low=1)
    x_data, _ = check_mixture(mixture).sample(n, generator=generator)
    side = min(3.5, WIDTH / len(steps))  # square panels, the row at most WIDTH wide
    fig, axes = _subplots(
        1,
        len(steps),
        figsize=(side * len(steps), side + 1.1),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for ax, step in zip(axes[0], steps):
        a = float(schedule.alpha_bar[step])
        t = torch.full((n,), step, device=x_data.device)
        x_t = q_sample(x_data, t, schedule, generator=generator)
        grid = density_grid(mixture, alpha_bar=a)
        title = f"t = {step + 1}, alpha_bar = {a:.3f}"
        samples_over_density(ax, grid, x_t, title=title, per_class=n, filled=True)
        ax.set_xlabel("$x_1$")
    axes[0, 0].set_ylabel("$x_2$")
    fig.suptitle(
        "The forward process: exact density of $x_t$ (shading) and draws from $q(x_t|x_0)$ (dots)"
    )
    fig.tight_layout()
    return fig


@_shown_once
def score_error_curve(errors: torch.Tensor, skip: int, ax=None):
    """A relative score error at every step (``errors[t]``, 0-based; book steps 1..T on the axis),
    both axes logarithmic, with the first ``skip`` stiff steps shaded and the mean error past them
    drawn as a dashed line: chapter 1's picture of a learned score against the exact one. Returns
    the axes."""
    check_tensor(errors, "errors", floating=True, ndim=1, nonempty=True)  # else skip was blamed
    skip = check_int(skip, "skip", low=0, high=len(errors) - 1)
    mean = errors[skip:].mean().item()
    if ax is None:
        _, ax = _subplots(figsize=(6.5, 3.8))
    ax.plot(range(1, len(errors) + 1), errors.numpy(), marker=".", lw=1)
    ax.axvspan(0.8, skip + 0.5, color="0.85", label=f"first {skip} steps")
    ax.axhline(mean, color="C3", ls="--", label=f"mean past them: {mean:.1%}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step t (log scale)")
    ax.set_ylabel("RMS score error / RMS exact score")
    ax.set_title("Learned score against the exact score")
    ax.legend()
    ax.figure.tight_layout()
    return ax


@_shown_once
def point_clouds(
    panels: dict, per_panel: int = 4000, xlim: float = 2.2, ylim: float = 1.6, size=(13 / 3, 4.2)
):
    """Side by side scatter plots of 2-D point sets, one panel per entry of ``panels`` (title ->
    points [N, 2]), the first ``per_panel`` points of each, on one box [-xlim, xlim] x [-ylim,
    ylim] with labelled axes: samples set beside exact draws to be compared by eye. Returns the
    figure."""
    _check_panels_dict(panels, "points")
    per_panel = check_int(per_panel, "per_panel", low=1)
    xlim = check_real(xlim, "xlim", low=0, low_open=True)
    ylim = check_real(ylim, "ylim", low=0, low_open=True)
    k = len(panels)
    fig, axes = _subplots(
        1, k, figsize=(size[0] * k, size[1]), sharex=True, sharey=True, squeeze=False
    )
    for ax, (title, pts) in zip(axes[0], panels.items()):
        pts = check_tensor(pts, f"panels[{title!r}]", floating=True, shape=(None, 2)).detach().cpu()
        ax.scatter(pts[:per_panel, 0], pts[:per_panel, 1], s=1, alpha=0.4)
        ax.set_title(title)
        ax.set_xlabel("$x_1$")
        ax.set_xlim(-xlim, xlim)
        ax.set_ylim(-ylim, ylim)
    axes[0, 0].set_ylabel("$x_2$")
    fig.tight_layout()
    return fig


@_shown_once
def class_panels(
    panels: dict,
    num_classes: int,
    size=(4.0, 4.0),
    legend=None,
    colors: Optional[list] = None,
):
    """Side by side scatter plots of labelled 2-D points, one panel per entry of ``panels`` (title ->
    (x [N, 2], y [N])), each class c in its colour of the coolwarm map (blue for class 0, red for
    the last of ``num_classes``), or ``colors[c]`` when given, the same in every panel. ``legend``:
    a format string for a class's entry (e.g. "asked y = {}") or a list of the classes' names, one
    legend for the figure, below the panels; None for no legend. Returns the figure."""
    import matplotlib.pyplot as plt

    _check_panels_dict(panels, "(x, y)")
    num_classes = check_int(num_classes, "num_classes", low=2)
    for name, value in (("legend", legend), ("colors", colors)):
        if isinstance(value, (list, tuple)) and len(value) != num_classes:
            raise ValueError(f"{name} must name {num_classes} classes, got {len(value)}")
    if legend is not None and not isinstance(legend, (str, list, tuple)):
        raise TypeError(
            f"legend must be a format string, a list of names or None, got {type(legend).__name__}"
        )
    if colors is not None and not isinstance(colors, (list, tuple)):
        raise TypeError(f"colors must be a list of colours or None, got {type(colors).__name__}")
    pairs = {}  # every panel checked before a figure is made: a refused call leaves none open
    for title, pair in panels.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise TypeError(f"panels[{title!r}] must be a pair (x, y)")
        x = check_tensor(pair[0], f"panels[{title!r}] x", floating=True, shape=(None, 2))
        y = check_tensor(pair[1], f"panels[{title!r}] y", floating=False, shape=(x.shape[0],))
        x, y = x.detach().cpu(), y.cpu()
        if y.numel() and not 0 <= int(y.min()) <= int(y.max()) < num_classes:  # else not drawn
            raise ValueError(
                f"panels[{title!r}] y must lie in 0..{num_classes - 1}, "
                f"got labels in {int(y.min())}..{int(y.max())}"
            )
        pairs[title] = x, y
    k = len(panels)
    fig, axes = _subplots(
        1, k, figsize=(size[0] * k, size[1]), sharex=True, sharey=True, squeeze=False
    )
    for ax, (title, (x, y)) in zip(axes[0], pairs.items()):
        for c in range(num_classes):
            if (y == c).any():
                color = colors[c] if colors else plt.cm.coolwarm(c / (num_classes - 1))
                label = None
                if legend:  # a format string, or the classes' names
                    label = legend.format(c) if isinstance(legend, str) else legend[c]
                ax.scatter(*x[y == c].T, s=2, color=color, label=label)
        ax.set_title(title)
        ax.set_xlabel("$x_1$")
    axes[0, 0].set_ylabel("$x_2$")
    if legend:  # below the panels, from one that shows the most classes: no data covered
        drawn = [len(ax.collections) for ax in axes[0]]
        handles = axes[0, drawn.index(max(drawn))].get_legend_handles_labels()
        fig.legend(*handles, markerscale=5, loc="lower center", ncol=num_classes)
        fig.tight_layout(rect=(0, 0.09, 1, 1), w_pad=2.0)  # room for it, and between panels
    else:
        fig.tight_layout(w_pad=2.0)
    return fig


@_shown_once
def gain_band(loss_u: torch.Tensor, loss_c: torch.Tensor, gain: torch.Tensor, ax=None):
    """The two minimal noise-prediction losses against the step t (1-based), without and with the
    label, the band between them shaded (the gain of knowing y), and the loss with y plus the gain
    by chapter 2's formula G_t = (1 - alpha_bar_t) E|grad log p_t(y | x_t)|^2 as a dashed line,
    which should trace the band's upper edge. Returns the axes."""
    check_tensor(loss_u, "loss_u", floating=True, ndim=1)
    n = len(loss_u)
    check_tensor(loss_c, "loss_c", floating=True, shape=(n,))
    check_tensor(gain, "gain", floating=True, shape=(n,))
    if ax is None:
        _, ax = _subplots(figsize=(7, 3.8))
    steps = range(1, n + 1)
    ax.plot(steps, loss_u, label="minimal loss without y")
    ax.plot(steps, loss_c, label="minimal loss with y")
    ax.fill_between(steps, loss_c, loss_u, color="C2", alpha=0.3, label="gain")
    ax.plot(
        steps, loss_c + gain, color="k", lw=0.8, ls="--", label="loss with y + gain by the formula"
    )
    ax.set_xlabel("step t")
    ax.set_ylabel("expected loss, summed over coordinates")
    ax.set_title("What knowing y is worth to the loss, at each noise level")
    ax.legend()
    ax.figure.tight_layout()
    return ax


@_shown_once
def mixture_classes(mixture: GaussianMixture, n: int = 4000, per_class: int = 2000, generator=None):
    """A labelled 2-D mixture in pictures (:func:`class_panels`): n draws from p(x) coloured by
    their class, then ``per_class`` draws from each p(x | y = c), all from ``generator`` in that
    order. Returns the figure."""
    n, per_class = check_int(n, "n", low=1), check_int(per_class, "per_class", low=1)
    panels = {"p(x), coloured by class": check_mixture(mixture).sample(n, generator=generator)}
    for c in range(mixture.num_classes):
        panels[f"p(x | y = {c})"] = mixture.sample(per_class, c, generator=generator)
    return class_panels(panels, mixture.num_classes, size=(4.0, 4.0), legend="y = {}")


@_shown_once
def tradeoff(
    rows,
    x: str,
    y: str,
    *,
    xlabel: Optional[str] = None,
    ylabel: Optional[str] = None,
    title: str = "",
    floor: Optional[float] = None,
    floor_label: str = "noise floor",
    logx: bool = False,
    note: Optional[str] = "NFE",
    ax=None,
    figsize=(6.5, 4.5),
):
    """Each method of ``rows`` (name -> {column: value}, a comparison table) as one point at
    (row[x], row[y]), labelled with its name and, with ``note``, that column ("CFG, 50 NFE"); a
    dotted vertical line at ``floor`` (a distance's noise floor) where given. The axes are labelled
    ``xlabel`` and ``ylabel``, by default the columns' names. Colours follow
    matplotlib's cycle of ten, the marker changes with each further ten. Returns the axes: chapter
    8's picture of guidance variants on their trade-off."""
    xlabel, ylabel = x if xlabel is None else xlabel, y if ylabel is None else ylabel
    check_mapping(rows, "rows", "dict name -> dict column -> value", "row", kind=dict)
    for name, row in rows.items():
        if not isinstance(row, dict):
            raise TypeError(f"rows[{name!r}] must be a dict column -> value, got {row!r:.60}")
    for name, value in (
        ("x", x),
        ("y", y),
        ("xlabel", xlabel),
        ("ylabel", ylabel),
        ("title", title),
    ):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    for name, row in rows.items():
        missing = [k for k in (x, y, note) if k is not None and k not in row]
        if missing:
            raise ValueError(f"rows[{name!r}] has no column {missing[0]!r}")
    check_bool(logx, "logx")
    floor = None if floor is None else check_real(floor, "floor")
    if ax is None:
        _, ax = _subplots(figsize=figsize)
    for i, (name, row) in enumerate(rows.items()):
        label = name if note is None else f"{name}, {row[note]} {note}"
        ax.scatter(row[x], row[y], marker="os^D"[i // 10 % 4], label=label)
    if floor is not None:
        ax.axvline(float(floor), color="gray", ls=":", label=floor_label)
    if logx:
        ax.set(xscale="log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    ax.figure.tight_layout()
    return ax


@_shown_once
def image_panels(
    panels,
    rows: int,
    *,
    row_labels: Optional[list] = None,
    xlabel: str = "",
    ylabel: str = "",
    figsize=None,
):
    """A row of :func:`image_grid` panels, one per entry of ``panels`` (title -> images
    [N, 1, H, W] in [-1, 1], N a multiple of ``rows``), each with ``rows`` rows labelled
    ``row_labels`` (default: their numbers) on the first panel, and the x label ``xlabel``; the
    first panel's y axis labelled ``ylabel``. Returns the figure: real digits beside samples, or
    samples at several scales from the same noise."""
    check_mapping(panels, "panels", "dict title -> images", "panel", kind=dict)
    rows = check_int(rows, "rows", low=1)
    for name, value in (("xlabel", xlabel), ("ylabel", ylabel)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    # each panel as wide as its columns, so that every image has one size and the panels one height
    columns = [_grid_columns(x, rows, f"panels[{title!r}]") for title, x in panels.items()]
    fig, axes = _subplots(
        1,
        len(panels),
        figsize=figsize or (4.2 * len(panels), 4.5),
        squeeze=False,
        gridspec_kw={"width_ratios": columns},
    )
    for i, (ax, (title, x)) in enumerate(zip(axes[0], panels.items())):
        # the rows are the same in every panel: labelled once, on the first
        image_grid(ax, x, rows, title=title, row_labels=[""] * rows if i else row_labels)
        if xlabel:
            ax.set_xlabel(xlabel)
    if ylabel:
        axes[0, 0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


# ---- chapters 3 and 4: the classifier term of Bayes' rule for scores ----------------------------------


@_shown_once
def bayes_fields(
    mixture: GaussianMixture,
    schedule,
    steps,
    y: int,
    lim: float = 3.0,
    arrows: int = 21,
    cells: int = 150,
):
    """Eq. 165 (Luo 2022) as a picture: for class ``y`` of a 2-D mixture, one row per step of
    ``steps`` (0-based), the unconditional score, the classifier gradient and the conditional score
    (left + middle = right) as unit arrows on an ``arrows`` x ``arrows`` grid over [-lim, lim]^2,
    coloured by the log10 of their length, over the shading of p_t(x), p_t(y|x) and p_t(x|y) on a
    ``cells`` x ``cells`` grid. Returns the figure."""
    if check_mixture(mixture).dim != 2:
        raise ValueError(f"mixture must be 2-D for bayes_fields, got dim={mixture.dim}")
    steps = check_levels(schedule, steps)
    y = check_int(y, "y", low=0, high=mixture.num_classes - 1)
    lim = check_real(lim, "lim", low=0, low_open=True)
    arrows, cells = check_int(arrows, "arrows", low=2), check_int(cells, "cells", low=2)

    def square(k: int):
        axis = torch.linspace(-lim, lim, k, dtype=mixture.dtype)
        gx, gy = torch.meshgrid(axis, axis, indexing="xy")
        return gx, gy, torch.stack([gx.flatten(), gy.flatten()], 1).to(mixture.device)

    (gx, gy, pts), (fx, fy, fine_pts) = square(arrows), square(cells)
    titles = [
        "unconditional score\n$\\nabla \\log p_t(x)$",
        "classifier gradient\n$\\nabla \\log p_t(y|x)$",
        "conditional score\n$\\nabla \\log p_t(x|y)$",
    ]
    fig, axes = _subplots(
        len(steps), 3, figsize=(12, 4 * len(steps)), sharex=True, sharey=True, squeeze=False
    )
    for row, step in enumerate(steps):
        m_t = mixture.diffuse(float(schedule.alpha_bar[step]))
        fields = [
            (m_t.score(pts), m_t.log_prob(fine_pts)),
            (m_t.classifier_grad(pts, y), m_t.class_log_posterior(fine_pts)[:, y]),
            (m_t.score(pts, y), m_t.log_prob(fine_pts, y)),
        ]
        for col, (v, shade) in enumerate(fields):
            ax = axes[row, col]
            shade = shade.exp().reshape(cells, cells).cpu()
            # p_t(y|x) on one fixed scale, 0 to 1, so the flattening toward p(y) shows row by row
            levels = torch.linspace(0, 1, 11).tolist() if col == 1 else 15
            filled = ax.contourf(fx, fy, shade, levels=levels, cmap="Blues", alpha=0.5)
            length = v.norm(dim=1).clamp(min=1e-12)
            u = (v / length[:, None]).cpu()
            colour = torch.log10(length).cpu()
            q = ax.quiver(
                gx,
                gy,
                u[:, 0],
                u[:, 1],
                colour,
                cmap="plasma",
                clim=(-2, 1.5),
                pivot="mid",
                scale=28,
                width=0.005,
            )
            if row == 0:
                ax.set_title(titles[col], fontsize=10)
            if col == 0:
                ax.set_ylabel(f"t = {step + 1}\n$x_2$")
            if row == len(steps) - 1:
                ax.set_xlabel("$x_1$")
            if col == 1:
                middle = filled
    fig.colorbar(q, ax=axes, shrink=0.6, label="log10 of the vector's length (arrows: unit length)")
    fig.colorbar(
        middle,
        ax=axes,
        orientation="horizontal",
        shrink=0.3,
        pad=0.06,
        label="middle column's shading: $p_t(y|x)$",
    )
    fig.suptitle(
        f"Eq. 165 as a picture: left + middle = right (class y = {y}). "
        "Shading: p_t(x), p_t(y|x), p_t(x|y)"
    )
    return fig


@_shown_once
def class_signal(t, grad_norm, accuracy, chance: float):
    """The class signal against the step t: the mean norm of the classifier gradient
    |grad log p_t(y | x_t)| (left axis) and the exact Bayes classifier's accuracy (right axis, with
    the chance level ``chance`` dotted), as :func:`diffcourse.metrics.class_signal` measures them.
    Returns the figure."""
    chance = check_real(chance, "chance", low=0, high=1)
    if not len(t) == len(grad_norm) == len(accuracy):
        raise ValueError(
            f"t, grad_norm and accuracy must have one value per step, got {len(t)}, "
            f"{len(grad_norm)} and {len(accuracy)}"
        )
    fig, ax1 = _subplots(figsize=(7, 4))
    ax1.plot(t, grad_norm, color="C0", label="mean norm of the classifier gradient")
    ax1.set_xlabel("step t")
    ax1.set_ylabel("mean $|\\nabla \\log p_t(y|x_t)|$", color="C0")
    ax2 = ax1.twinx()
    ax2.plot(t, accuracy, color="C1", ls="--", label="exact Bayes accuracy")
    ax2.axhline(chance, color="C1", lw=0.8, ls=":", label=f"chance ({chance:.2f})")
    ax2.set_ylabel("Bayes classifier accuracy", color="C1")
    ax1.set_title("The class signal peaks at middle noise, then fades")
    fig.legend(loc="lower left", bbox_to_anchor=(0.12, 0.15))
    fig.tight_layout()
    return fig


@_shown_once
def noisy_classifier_check(t, check, chance: float):
    """A noise-aware classifier against the exact Bayes classifier, against the step t, from
    :func:`diffcourse.metrics.noisy_classifier_check`: left, both accuracies on x_t with the chance
    level ``chance``; right, the RMS norms of the exact classifier gradient and of the learned
    one's error (log scale). Returns the figure."""
    chance = check_real(chance, "chance", low=0, high=1)
    if not hasattr(check, "_fields") or "bayes_accuracy" not in check._fields:
        raise TypeError(f"check must be a metrics.NoisyClassifierCheck, got {type(check).__name__}")
    if any(len(v) != len(t) for v in check):
        raise ValueError(f"check must have one value per step of t ({len(t)})")
    fig, (left, right) = _subplots(1, 2, figsize=(11, 4))
    left.plot(t, check.bayes_accuracy, label="exact Bayes classifier")
    left.plot(t, check.accuracy, ls="--", label="learned $p_\\phi(y|x_t, t)$")
    left.axhline(chance, color="gray", lw=0.8, ls=":", label="chance")
    left.set(xlabel="step t", ylabel="accuracy on $x_t$", title="Accuracy")
    right.plot(t, check.grad_rms, label="exact gradient (RMS norm)")
    right.plot(t, check.error_rms, ls="--", label="learned minus exact (RMS norm)")
    right.set(xlabel="step t", ylabel="RMS norm over $x_t$", yscale="log")
    right.set_title("Learned vs exact $\\nabla \\log p_t(y|x_t)$")
    left.legend()
    right.legend()
    fig.tight_layout()
    return fig


# ---- chapters 7 and 8: image samples by class, and metrics against a setting ------------------------


@_shown_once
def class_grids(
    panels,
    rows: int,
    per_row: int = 10,
    xlabel: str = "",
    ylabel: str = "",
    size=(4.0, 4.6),
    title: str = "{}",
):
    """One :func:`image_grid` panel per entry of ``panels`` (key -> images [rows * k, 1, H, W]
    sorted by class in blocks of k, as :func:`~diffcourse.samplers.balanced_labels` asks for
    them), side by side, each showing the first ``per_row`` images of every block, one row per
    class, titled ``title.format(key)``. ``xlabel`` goes under every panel, ``ylabel`` left of
    the first; ``size`` is one panel's. Returns the figure."""
    check_mapping(panels, "panels", "dict title -> images", "panel", kind=dict)
    rows, per_row = check_int(rows, "rows", low=1), check_int(per_row, "per_row", low=1)
    for key, x in panels.items():
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[0] % rows:
            raise ValueError(
                f"panels[{key!r}] must be images [N, 1, H, W] with N a multiple of rows={rows}"
            )
        if x.shape[0] // rows < per_row:
            raise ValueError(f"per_row: panels[{key!r}] has {x.shape[0] // rows} per row")
    fig, axes = _subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]), squeeze=False)
    if not isinstance(title, str):
        raise TypeError(f"title must be a str, got {type(title).__name__}")
    for ax, (key, x) in zip(axes[0], panels.items()):
        shown = x.reshape(rows, -1, *x.shape[1:])[:, :per_row].reshape(-1, *x.shape[1:])
        image_grid(ax, shown, rows=rows, title=title.format(key))
        ax.set_xlabel(xlabel)
    axes[0, 0].set_ylabel(ylabel)
    fig.tight_layout()
    return fig


def _curve(ax, label: str, curve) -> None:
    """One curve of :func:`curve_panels`: (x, y) or (x, y, style)."""
    if not isinstance(curve, (tuple, list)) or len(curve) not in (2, 3):
        raise TypeError(f"curve {label!r} must be (x, y) or (x, y, style), got {curve!r:.60}")
    x, y, style = (*curve, {}) if len(curve) == 2 else curve
    style = {"fmt": style} if isinstance(style, str) else dict(style)
    if len(x) != len(y):
        raise ValueError(f"curve {label!r} has {len(y)} values for {len(x)} x values")
    fmt = style.pop("fmt", None)
    if y and isinstance(y[0], (tuple, list)):  # (mean, std) pairs: error bars
        means, stds = ([float(v[i]) for v in y] for i in (0, 1))
        style.setdefault("marker", "o")
        style.setdefault("capsize", 3)
        ax.errorbar(x, means, stds, label=label, **style)
    else:
        ax.plot(x, [float(v) for v in y], *([fmt] if fmt else []), label=label, **style)


@_shown_once
def curve_panels(
    panels,
    xlabel: str,
    ylabels,
    hlines=None,
    logx: bool = False,
    logy=(),
    legend_title: Optional[str] = None,
    size=(4.3, 3.8),
):
    """Panels side by side, one per entry of ``panels`` (each a dict label -> curve), with the
    y label of ``ylabels`` and ``xlabel`` under every panel. A curve is ``(x, y)`` or
    ``(x, y, style)``, style a matplotlib format string ("--o") or a dict of plot arguments (with
    an optional "fmt"); y holding (mean, std) pairs is drawn with error bars. ``hlines`` (panel
    index -> (y, label) or (y, label, style dict)) adds labelled horizontal reference lines
    (grey, dashed by default); ``logy`` lists the panels with a log y axis. Every panel has a
    legend, under its x label, so that it covers no curve. Returns the axes. The
    metric-against-a-setting figures of chapters 7 and 8."""
    panels = check_sequence(panels, "panels", "dicts label -> curve")
    ylabels = check_strs(ylabels, "ylabels")
    for i, curves in enumerate(panels):
        check_mapping(curves, f"panels[{i}]", "dict label -> curve", "curve", kind=dict)
    if len(ylabels) != len(panels):
        raise ValueError(f"ylabels must give one label per panel ({len(panels)})")
    check_bool(logx, "logx")
    if hlines is not None and not isinstance(hlines, dict):
        raise TypeError(f"hlines must be a dict panel -> (y, label), got {type(hlines).__name__}")
    if isinstance(logy, (str, bytes)) or not isinstance(logy, (list, tuple, range)):
        raise TypeError(f"logy must be a sequence of panel indices, got {logy!r}")
    hlines = {} if hlines is None else dict(hlines)
    for i in [*hlines, *logy]:
        if not isinstance(i, int) or not 0 <= i < len(panels):
            raise ValueError(f"hlines/logy: panel index {i!r} out of 0..{len(panels) - 1}")
    fig, axes = _subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]))
    axes = [axes] if len(panels) == 1 else list(axes)
    for i, (ax, curves, ylabel) in enumerate(zip(axes, panels, ylabels)):
        for label, curve in curves.items():
            _curve(ax, label, curve)
        if i in hlines:
            y, label, *style = hlines[i]
            ax.axhline(y, label=label, **(style[0] if style else {"color": "gray", "ls": "--"}))
        ax.set(xlabel=xlabel, ylabel=ylabel)
        if logx:
            ax.set_xscale("log")
        if i in logy:
            ax.set_yscale("log")
    fig.tight_layout()
    _legends_below(axes, legend_title)
    return axes


def _legends_below(axes, title: Optional[str] = None) -> None:
    """Each panel's legend under its x label, where it covers no curve (matplotlib's "best" spot
    inside a panel still can): two columns of short labels, one of long ones. The notebooks save
    a figure with bbox_inches="tight", which takes the legends in."""
    renderer = axes[0].figure.canvas.get_renderer()
    for ax in axes:
        below = ax.xaxis.get_tightbbox(renderer).y0  # the tick labels' and x label's bottom
        y = ax.transAxes.inverted().transform((0, below))[1]
        labels = ax.get_legend_handles_labels()[1]
        ncol = 2 if max(map(len, labels)) <= 16 else 1
        ax.legend(
            title=title,
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, y - 0.02),
            ncol=ncol,
            frameon=False,
        )


_LEVELS_KEYS = {"mixture": ("d1", "spread1", "d3", "spread3"), "digits": ("diversity",)}


def _check_levels_sweep(name: str, sweep) -> list:
    """The levels of a sweep ``(levels, eta) -> metrics`` run at eta = 0 and 1 alike, ascending."""
    check_mapping(sweep, name, "dict (levels, eta) -> metrics", "(levels, eta) row", kind=dict)
    for key, row in sweep.items():
        if not (isinstance(key, tuple) and len(key) == 2 and key[1] in (0.0, 1.0)):
            raise ValueError(f"{name}: keys must be (levels, eta) with eta 0 or 1, got {key!r}")
        missing = [m for m in _LEVELS_KEYS[name] if m not in row]
        if missing:
            raise ValueError(f"{name}[{key!r}] has no {', '.join(missing)}")
    levels = [sorted(s for s, e in sweep if e == eta) for eta in (0.0, 1.0)]
    if levels[0] != levels[1]:
        raise ValueError(f"{name}: eta = 0 and eta = 1 must run at the same levels, got {levels}")
    return levels[0]


@_shown_once
def levels_sweep(mixture: dict, digits: dict, ddpm: dict, ddpm_spread: float):
    """Chapter 8's levels sweep: three panels against the number of levels DDIM visits (log
    scale), eta = 0 solid and eta = 1 dashed.

    - On the mixture, one curve per eta and gamma (1 blue, 3 red): the distance over its noise
      floor (to p(x|y) at gamma = 1, to DDPM's samples at 3), and the spread over p(x|y)'s, read
      from ``mixture[levels, eta]`` = {"d1", "spread1", "d3", "spread3", ...}; grey dashed lines
      at the noise floor and at DDPM's spread at gamma = 3 (``ddpm_spread``).
    - On the digits, the diversity over held-out digits', from ``digits[levels, eta]``, with DDPM
      on all 1,000 levels (``ddpm``, its metrics) as a black star.

    Each sweep holds eta = 0 and 1 at the same levels. Returns the axes."""
    mix_levels = _check_levels_sweep("mixture", mixture)
    img_levels = _check_levels_sweep("digits", digits)
    if not isinstance(ddpm, dict):
        raise TypeError(f"ddpm must be a dict of DDPM's metrics, got {type(ddpm).__name__}")
    if "diversity" not in ddpm:
        raise ValueError("ddpm has no diversity")
    ddpm_spread = check_real(ddpm_spread, "ddpm_spread")
    panels = [{}, {}, {}]  # distance, spread (mixture); diversity (digits)
    for eta, style in ((0.0, "-o"), (1.0, "--s")):
        for gamma, color in ((1, "C0"), (3, "C3")):
            look = {"fmt": style, "color": color}
            for panel, metric in zip(panels, ("d", "spread")):
                ys = [mixture[s, eta][f"{metric}{gamma}"] for s in mix_levels]
                panel[f"eta = {eta:g}, gamma = {gamma}"] = (mix_levels, ys, look)
        ys = [digits[s, eta]["diversity"] for s in img_levels]
        panels[2][f"DDIM eta = {eta:g}"] = (img_levels, ys, style)
    panels[2]["DDPM, 1,000 levels"] = ([1000], [ddpm["diversity"]], "k*")
    refs = {0: (1.0, "noise floor"), 1: (ddpm_spread, "DDPM, gamma = 3")}
    ylabels = (
        "distance / floor\n(to p(x|y) at 1, to DDPM at 3)",
        "mixture: spread / p(x|y)'s",
        "digits: diversity / held-out's",
    )
    return curve_panels(panels, "levels visited", ylabels, refs, logx=True)


@_shown_once
def sweep_grid(
    grid,
    samples,
    values,
    measures,
    y: Optional[torch.Tensor] = None,
    gammas=None,
    per_class: int = 600,
):
    """:func:`samples_grid` of a sweep: one row per kind, one column per gamma, each panel titled
    with the kind, gamma and its two measures, a line each: "CFG, gamma = 4 / agreement 0.99 /
    spread 0.62".
    ``samples`` and ``values`` are keyed by (kind, gamma) (``values`` holds the measures' numbers,
    as :func:`diffcourse.metrics.guidance_sweep` returns them; only the first two of each are
    shown); ``gammas`` picks the columns (default: every gamma of ``values``, ascending),
    ``measures`` names the two numbers. A kind that did not run at a gamma leaves its panel empty.
    Returns the figure."""
    check_mapping(
        values, "values", "dict (kind, gamma) -> measures", "(kind, gamma) pair", kind=dict
    )
    if isinstance(measures, str) or len(measures) != 2:
        raise ValueError(f"measures must name the two numbers of each panel, got {measures!r}")
    kinds = list(dict.fromkeys(kind for kind, _ in values))
    if gammas is None:
        gammas = sorted({g for _, g in values})
    rows = {kind: {} for kind in kinds}
    for kind in kinds:
        for g in gammas:
            if (kind, g) not in values:  # not run here: an empty panel keeps the columns aligned
                rows[kind][f"{kind}, {g}"] = None
                continue
            a, b = values[kind, g][:2]
            title = f"{kind}, $\\gamma$ = {g:g}\n{measures[0]} {a:.2f}\n{measures[1]} {b:.2f}"
            rows[kind][title] = samples[kind, g]
    rows = {k: r for k, r in rows.items() if any(x is not None for x in r.values())}
    return samples_grid(grid, rows, y, per_class)


def sampled_frames(sample, eps_fns, every: int = 5) -> dict:
    """``{name: FrameCollector}``: each ``eps_fn`` of ``eps_fns`` run through
    ``sample(eps_fn, callback=keep)`` with a :class:`FrameCollector` keeping every ``every``-th step,
    and the finished samples as the last frame: the runs :func:`animate_samples` plays."""
    check_callable(sample, "sample")
    check_mapping(eps_fns, "eps_fns", "dict name -> eps_fn", "eps_fn", kind=dict)
    out = {}
    for name, eps_fn in eps_fns.items():
        keep = FrameCollector(every)
        out[name] = keep.finish(sample(eps_fn, callback=keep))
    return out
