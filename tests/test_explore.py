"""The interactive gamma figure of labs 5 and 6 (issue 19): exact eq. 170, drawn and redrawn."""

import sys
import types
from unittest import mock

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from diffcourse.data import three_blobs  # noqa: E402
from diffcourse.explore import explore_guidance, guided_draws, plot_guidance  # noqa: E402
from diffcourse.mixture import exact_eps_fn  # noqa: E402
from diffcourse.samplers import pc_sample  # noqa: E402
from diffcourse.schedules import cosine_schedule  # noqa: E402

MIX, SCHEDULE = three_blobs(), cosine_schedule(50)


def test_guided_draws_are_eq_170_on_exact_scores():
    """At gamma = 2.5 (where the formula runs, not a shortcut): the same draws as a sampler fed
    gamma eps(x, y) + (1 - gamma) eps(x) by hand, with the same seed."""
    gamma, n, seed = 2.5, 64, 3
    cond, uncond = exact_eps_fn(MIX, SCHEDULE, 1), exact_eps_fn(MIX, SCHEDULE)
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 2, generator=gen)
    by_hand = pc_sample(
        lambda x, t: gamma * cond(x, t) + (1 - gamma) * uncond(x, t),
        noise,
        SCHEDULE,
        corrector_steps=1,
        generator=gen,
        progress=False,
    )
    got = guided_draws(MIX, SCHEDULE, 1, gamma, n=n, corrector_steps=1, seed=seed)
    torch.testing.assert_close(got, by_hand)


def test_gamma_sharpens_the_class():
    """Paired draws: gamma = 4 leaves the samples tighter than gamma = 1 (chapter 4's trade-off)."""
    spread = lambda x: torch.cov(x.T).trace().item()
    g1 = guided_draws(MIX, SCHEDULE, 0, 1.0, n=400)
    g4 = guided_draws(MIX, SCHEDULE, 0, 4.0, n=400)
    assert spread(g4) < 0.9 * spread(g1)


def test_plot_has_two_labelled_panels():
    fig = plot_guidance(MIX, SCHEDULE, 0, 3.0, corrector_steps=1, n=50)
    axes = fig.axes
    assert len(axes) == 2
    assert all(ax.get_xlabel() == "$x_1$" for ax in axes) and axes[0].get_ylabel() == "$x_2$"
    assert "p(x | y)" in axes[0].get_title() and "tilted" in axes[1].get_title()
    plt.close(fig)


class _FakeSlider:
    def __init__(self, value, **kwargs):
        self.value, self.kwargs, self.observers = value, kwargs, []

    def observe(self, fn, names):
        self.observers.append((fn, names))

    def move(self, value):
        self.value = value
        for fn, _ in self.observers:
            fn({"new": value})


def _fake_widgets():
    return types.SimpleNamespace(FloatSlider=_FakeSlider, IntSlider=_FakeSlider, HBox=lambda c: c)


def test_sliders_redraw_the_figure_in_place():
    pytest.importorskip("IPython")  # a notebook's display (installed with the book's set-up)
    shown, handle = [], mock.Mock()

    def display(obj, display_id=False):
        shown.append(obj)
        return handle if display_id else None

    with (
        mock.patch.dict(sys.modules, {"ipywidgets": _fake_widgets()}),
        mock.patch("IPython.display.display", display),
        mock.patch("diffcourse.report._in_kernel", return_value=True),
    ):
        sliders = explore_guidance(MIX, SCHEDULE, 0, gamma=2.0, corrector_steps=0, n=50)
        assert set(sliders) == {"gamma", "corrector_steps"}
        assert sliders["gamma"].kwargs["continuous_update"] is False  # redraw on release only
        sliders["gamma"].move(6.0)
        sliders["corrector_steps"].move(2)
    assert handle.update.call_count == 2  # the same figure, updated in place
    title = handle.update.call_args[0][0]._suptitle.get_text()
    assert "gamma = 6" in title and "K = 2" in title


def test_a_start_past_the_sliders_end_widens_the_slider():
    # a slider would clamp gamma = 12 to 8 and K = 7 to 5 without a word
    pytest.importorskip("IPython")
    with (
        mock.patch.dict(sys.modules, {"ipywidgets": _fake_widgets()}),
        mock.patch("IPython.display.display", lambda obj, display_id=False: None),
        mock.patch("diffcourse.report._in_kernel", return_value=True),
    ):
        sliders = explore_guidance(MIX, SCHEDULE, 0, gamma=12.0, corrector_steps=7, n=20)
        small = explore_guidance(MIX, SCHEDULE, 0, gamma=2.0, corrector_steps=1, n=20)
    assert sliders["gamma"].kwargs["max"] == 12.0 and sliders["corrector_steps"].kwargs["max"] == 7
    assert small["gamma"].kwargs["max"] == 8.0 and small["corrector_steps"].kwargs["max"] == 5


def test_without_ipywidgets_the_figure_stays_and_a_note_says_how():
    pytest.importorskip("IPython")
    with (
        mock.patch.dict(sys.modules, {"ipywidgets": None}),
        mock.patch("IPython.display.display") as display,
        mock.patch("builtins.print") as printed,
        mock.patch("diffcourse.report._in_kernel", return_value=True),
    ):
        sliders = explore_guidance(MIX, SCHEDULE, 2, gamma=1.0, n=50)
    assert sliders == {} and display.call_count == 1 and "make lab" in printed.call_args[0][0]
    # a lab cell that ends with the call shows the figure only, not "{}" after it
    from IPython.core.formatters import DisplayFormatter

    assert DisplayFormatter().format(sliders) == ({}, {})


def test_in_a_script_the_figure_shows_without_ipython():
    # a lab run with python (CI's image has no Jupyter): matplotlib shows the figure
    blocked = {"IPython": None, "IPython.display": None, "ipywidgets": None}
    with mock.patch.dict(sys.modules, blocked), mock.patch("matplotlib.pyplot.show") as show:
        sliders = explore_guidance(MIX, SCHEDULE, 2, gamma=1.0, n=50)
    assert sliders == {} and show.call_count == 1


@pytest.mark.parametrize(
    "kwargs, error, word",
    [
        (dict(y=3), ValueError, "y"),
        (dict(y=1.0), TypeError, "y"),  # a float is the wrong type for a label
        (dict(gamma=-1.0), ValueError, "gamma"),
        (dict(gamma="4"), TypeError, "gamma"),
        (dict(gamma=float("nan")), ValueError, "gamma"),  # a float, but no value
        (dict(corrector_steps=-1), ValueError, "corrector_steps"),
        (dict(corrector_steps=1.5), TypeError, "corrector_steps"),
        (dict(n=1), ValueError, "n"),
    ],
)
def test_bad_input_is_named(kwargs, error, word):
    args = dict(y=0, gamma=2.0, corrector_steps=0, n=10) | kwargs
    with pytest.raises(error, match=word):
        guided_draws(MIX, SCHEDULE, **args)


def test_plot_and_seed_bad_input_is_named():
    with pytest.raises(ValueError, match="^lim must be"):
        plot_guidance(MIX, SCHEDULE, 0, 2.0, n=10, lim=0.0)
    with pytest.raises(ValueError, match="^cells must be an int"):
        plot_guidance(MIX, SCHEDULE, 0, 2.0, n=10, cells=1)
    with pytest.raises(TypeError, match="^seed must be an int"):
        guided_draws(MIX, SCHEDULE, 0, 2.0, n=10, seed=1.5)


def test_a_mixture_in_three_dimensions_is_refused():
    m = three_blobs()
    m3 = type(m)(
        torch.zeros(1, 3), torch.eye(3)[None], torch.ones(1), torch.zeros(1, dtype=torch.long)
    )
    with pytest.raises(ValueError, match="mixture"):  # a mixture, of the wrong dimension
        guided_draws(m3, SCHEDULE, 0, 1.0)
