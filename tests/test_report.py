"""Tables and glue: real tables in a kernel, aligned text in a script, never a traceback elsewhere."""

import os
import sys
import types

import pytest
import torch

from diffcourse import report
from diffcourse.report import glue, table


def test_table_markdown_and_plain_text(capsys):
    md = table(
        [[1.0, torch.tensor(0.25), 3, "a|b"], [2.5, None, 12, "c"]],
        ["gamma", "agreement", "n", "name"],
        title="sweep",
    )
    assert md.splitlines()[0] == "**sweep**"
    assert "| gamma | agreement | n | name |" in md
    assert "|---:|---:|---:|:---|" in md  # numbers right-aligned, text left
    assert "| 1.000 | 0.250 | 3 | a\\|b |" in md and "| 2.500 | - | 12 | c |" in md
    printed = capsys.readouterr().out.splitlines()  # a script: aligned plain text
    assert printed[0] == "sweep" and printed[1].split() == ["gamma", "agreement", "n", "name"]
    assert printed[3].split() == ["1.000", "0.250", "3", "a|b"]
    assert len({len(line) for line in printed[1:3]}) == 1  # the header and the rule line up


def test_table_from_mappings_and_formats(capsys):
    md = table(
        {"exact": {"agree": 0.5, "spread": 1.25}, "CFG": {"agree": 0.75, "spread": 2.0}},
        floatfmt=".2f",
        show=False,
    )
    assert "|  | agree | spread |" in md and "| exact | 0.50 | 1.25 |" in md
    md = table([{"k": "x", "v": 0.123456}], floatfmt=[None, ".1e"], show=False)
    assert "| x | 1.2e-01 |" in md
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="header"):
        table([[1, 2]])
    with pytest.raises(ValueError, match="rows"):
        table([[1, 2], [3]], ["a", "b"])


def test_table_from_a_mapping_of_rows():
    # name -> values: a list, a tuple or a 1-dim tensor spreads into cells, a scalar is one cell
    rows = {"a": (1.0, 2.0), "b": [3.0, 4.0], "c": torch.tensor([5.0, 6.0])}
    md = table(rows, ["name", "x", "y"], ".1f", show=False)
    assert "| a | 1.0 | 2.0 |" in md and "| b | 3.0 | 4.0 |" in md and "| c | 5.0 | 6.0 |" in md
    md = table({"gap": 1e-7, "steps": 3}, ["run", "value"], ".1e", show=False)
    assert "| gap | 1.0e-07 |" in md and "| steps | 3 |" in md
    # a list of (mean, std) pairs: one pair per cell
    md = table({1.0: [(0.5, 0.1), (2.0, 0.25)]}, ["g", "a", "b"], ".2f", show=False)
    assert "| 1.00 | 0.50 ± 0.10 | 2.00 ± 0.25 |" in md
    with pytest.raises(ValueError, match="header"):
        table({"a": (1.0, 2.0)})
    with pytest.raises(ValueError, match="row 0 has 3 cells"):
        table({"a": (1.0, 2.0)}, ["name", "x", "y", "z"])
    with pytest.raises(TypeError, match="all mappings or none"):
        table({"a": {"x": 1.0}, "b": (2.0,)}, ["name", "x"])
    for empty in ({}, [], iter([])):  # nothing to show is a caller's slip, not an empty table
        with pytest.raises(ValueError, match="^rows is empty"):
            table(empty, ["name", "x"], show=False)


def test_table_shows_markdown_in_a_kernel(monkeypatch):
    shown = []
    monkeypatch.setattr(report, "_in_kernel", lambda: True)
    fake = types.ModuleType("IPython.display")
    fake.Markdown = lambda text: ("markdown", text)
    fake.display = shown.append
    monkeypatch.setitem(sys.modules, "IPython.display", fake)
    md = table([[1, 2.0]], ["a", "b"])
    assert shown == [("markdown", md)]
    md._ipython_display_()  # as a cell's last line: shown once only


def test_glue(monkeypatch):
    assert glue("x", torch.tensor(2.5)) == 2.5  # a script: nothing glued, the number back
    glued = []
    monkeypatch.setattr(report, "_in_kernel", lambda: True)
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display: glued.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert glue("ratio", torch.tensor(1.5)) == 1.5
    assert glued == [("ratio", 1.5, False)] and type(glued[0][1]) is float
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # Colab: myst-nb missing
    assert glue("y", 3) == 3
    with pytest.raises(ValueError, match="name must not be empty"):
        glue("", 1.0)
    with pytest.raises(TypeError, match="name must be a str"):
        glue(3, 1.0)


def test_glue_table_glues_html_for_another_page(monkeypatch):
    pytest.importorskip("IPython")  # a kernel's display types (installed with the book's set-up)
    pytest.importorskip("markdown_it")
    from diffcourse.report import glue_table

    md = table([[1, 2.5]], ["a", "b"], show=False)
    assert glue_table("t", md) == md  # a script: nothing glued
    glued = []
    monkeypatch.setattr(report, "_in_kernel", lambda: True)
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display: glued.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    assert glue_table("t", md) == md
    ((name, value, display),) = glued
    html = value._repr_html_() if hasattr(value, "_repr_html_") else value.data
    assert name == "t" and display is False
    assert "<td>2.500</td>" in html.replace(' style="text-align:right"', "")
    # the theme's look and scrolling box, as a table of the page's own gets
    box = f'<div class="{report.SCROLL_BOX}"><table class="table">'
    assert html.count(box) == 1 and html.rstrip().endswith("</table></div>")
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # Colab: myst-nb missing
    assert glue_table("t", md) == md and len(glued) == 1
    with pytest.raises(ValueError, match="name must not be empty"):
        glue_table("", md)
    with pytest.raises(TypeError, match="markdown"):
        glue_table("t", 3)


def test_table_prints_mean_and_std_pairs():
    md = table(
        [["a", (0.3012, torch.tensor(0.0345)), (1, 2)]],
        ["x", "m", "pair"],
        floatfmt=".2f",
        show=False,
    )
    assert "| a | 0.30 ± 0.03 | 1.00 ± 2.00 |" in md
    assert "| a | (0.3, 0.1) |" in table([["a", (0.3, 0.1)]], ["x", "m"], floatfmt=None, show=False)


def test_glue_key_of_the_labs_row_names():
    assert report.glue_key("CFG 1.5") == "cfg_1p5"
    assert report.glue_key("CFG++") == "cfgpp"
    assert report.glue_key("blue, corrector") == "blue_corrector"
    assert report.glue_key("diagonal, exact q0") == "diagonal_exact_q0"
    with pytest.raises(TypeError, match="name"):
        report.glue_key(3)
    with pytest.raises(ValueError, match="glue key"):
        report.glue_key("p(x|y)")


def test_glue_rows_glues_each_cell_under_its_key(monkeypatch):
    seen = []
    monkeypatch.setattr(
        report, "glue", lambda name, value, display=False: seen.append((name, value))
    )
    rows = {"CFG++": {"spread": 0.5, "NFE": 100}, "CFG 1.5": {"spread": 0.7, "NFE": 50}}
    assert report.glue_rows("mix", rows, ("spread",)) is rows
    assert seen == [("mix_spread_cfgpp", 0.5), ("mix_spread_cfg_1p5", 0.7)]
    with pytest.raises(ValueError, match="keys"):
        report.glue_rows("mix", rows, ("tilted",))
    with pytest.raises(TypeError, match="keys"):
        report.glue_rows("mix", rows, "spread")
    with pytest.raises(ValueError, match="prefix must not be empty"):
        report.glue_rows("", rows, ("spread",))


def test_glue_nested_names_each_value_and_returns_plain_numbers(monkeypatch):
    seen = {}

    def fake_glue(name, value):
        return seen.setdefault(name, report._plain(value))

    monkeypatch.setattr(report, "glue", fake_glue)
    table = {1.5: {"frechet": torch.tensor(0.75)}, 5.0: {"frechet": 2.0}}
    out = report.glue_nested("well_{key}_{0:g}", table)
    assert seen == {"well_frechet_1p5": 0.75, "well_frechet_5": 2.0}
    assert out == {1.5: {"frechet": 0.75}, 5.0: {"frechet": 2.0}}
    seen.clear()
    report.glue_nested("{key}_{0}_eta{1:g}", {(10, 1.0): {"d1": 3}})
    assert seen == {"d1_10_eta1": 3}


def test_glue_nested_bad_input():
    with pytest.raises(ValueError, match="template"):
        report.glue_nested("no_key_{0}", {1: {"a": 1}})
    with pytest.raises(TypeError, match="values"):
        report.glue_nested("{key}", [1, 2])
    with pytest.raises(TypeError, match="^template must be a str"):  # was a ValueError
        report.glue_nested(None, {1: {"a": 1}})


# ---- pivot and glue_all (labs 5 and 6) ---------------------------------------------------------------
from diffcourse import report as _report  # noqa: E402


def test_pivot_lays_a_sweep_out_by_gamma():
    values = {("exact", 0.0): (0.3, 1.0), ("exact", 1.0): (0.9, 0.8), ("CFG", 1.0): (0.8, 0.7)}
    rows, header = _report.pivot(values, ("agree", "spread"), "gamma")
    assert header == ["gamma", "agree exact", "agree CFG", "spread exact", "spread CFG"]
    assert rows == [[0.0, 0.3, None, 1.0, None], [1.0, 0.9, 0.8, 0.8, 0.7]]
    _, short = _report.pivot(values, ("a", "s"), "g", label=str.lower)
    assert short[1:3] == ["a exact", "a cfg"]
    with pytest.raises(ValueError, match="measures"):
        _report.pivot({("exact", 0.0): (1.0,)}, ("agree", "spread"), "gamma")
    with pytest.raises(TypeError, match="^values must be a mapping"):
        _report.pivot([], ("agree",), "gamma")
    with pytest.raises(ValueError, match="^values must hold at least one"):  # empty: a value
        _report.pivot({}, ("agree",), "gamma")
    with pytest.raises(ValueError, match="^measures must hold at least one"):
        _report.pivot(values, (), "gamma")
    with pytest.raises(TypeError, match="^measures must be a sequence of str"):
        _report.pivot(values, "agree", "gamma")


def test_glue_all_names_every_value(monkeypatch):
    glued = []
    monkeypatch.setattr(
        _report, "glue", lambda name, value, display=False: glued.append((name, value))
    )
    values = {("CFG", 4.0): (0.99, 0.6), ("CG", 8.0): (0.98, 0.5)}
    assert _report.glue_all(values, "agree_{}_{:g}", "spread_{}_{:g}") is values
    assert glued == [
        ("agree_CFG_4", 0.99),
        ("spread_CFG_4", 0.6),
        ("agree_CG_8", 0.98),
        ("spread_CG_8", 0.5),
    ]
    glued.clear()
    _report.glue_all(
        {"explicit": {"early": 0.1, "late": 0.2}, "implicit": {"early": 0.3}}, "grad_{}_{}"
    )
    assert glued == [
        ("grad_explicit_early", 0.1),
        ("grad_explicit_late", 0.2),
        ("grad_implicit_early", 0.3),
    ]
    with pytest.raises(ValueError, match="patterns"):
        _report.glue_all({"a": (1, 2, 3)}, "x_{}", "y_{}")
    with pytest.raises(TypeError, match="values"):
        _report.glue_all([1], "x_{}")


def test_progress_bar_is_tqdm_auto_or_text_as_the_environment_says(monkeypatch):
    import tqdm.auto
    import tqdm.std

    from diffcourse.report import progress_bar

    monkeypatch.delenv("DIFFCOURSE_PROGRESS", raising=False)
    bar = progress_bar(range(3), disable=True)
    assert type(bar) is tqdm.auto.tqdm and list(bar) == [0, 1, 2]
    monkeypatch.setenv("DIFFCOURSE_PROGRESS", "text")
    bar = progress_bar(total=5, disable=True)
    assert type(bar) is tqdm.std.tqdm and bar.total == 5
    monkeypatch.setenv("DIFFCOURSE_PROGRESS", "widgets")
    with pytest.raises(ValueError, match="^DIFFCOURSE_PROGRESS must be 'auto' or 'text'"):
        progress_bar(range(3))


def test_a_text_bar_redraws_rarely_so_a_long_cell_stays_within_the_kernels_queue(monkeypatch):
    # an hour of one-second steps on a fake clock: tqdm's own default redraws at every step, one
    # message each under a kernel; the text bar at most every TEXT_BAR_SECONDS
    import io

    from diffcourse.report import TEXT_BAR_SECONDS, progress_bar

    def redraws(mode, **kwargs):
        monkeypatch.setenv("DIFFCOURSE_PROGRESS", mode)
        out = io.StringIO()
        bar = progress_bar(range(3600), file=out, **kwargs)
        clock = iter(range(bar.start_t.__ceil__(), 10**12))
        bar._time = lambda: next(clock)
        assert sum(1 for _ in bar) == 3600
        return out.getvalue().count("\r")

    assert TEXT_BAR_SECONDS >= 5
    assert redraws("auto") > 3000  # outside a notebook tqdm.auto is the text bar, redrawn often
    assert redraws("text") < 3600 / TEXT_BAR_SECONDS + 5
    assert redraws("text", mininterval=0.1) > 3000  # a caller's own interval is kept


def test_nbval_runs_the_labs_with_text_progress_bars(monkeypatch):
    # notebooks/conftest.py, which nbval loads first, sets it for the kernels it starts (they
    # inherit the environment); a value set before is kept
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "notebooks" / "conftest.py"
    for before, after in ((None, "text"), ("auto", "auto")):
        if before is None:
            monkeypatch.delenv("DIFFCOURSE_PROGRESS", raising=False)
        else:
            monkeypatch.setenv("DIFFCOURSE_PROGRESS", before)
        spec = importlib.util.spec_from_file_location("labs_conftest", path)
        spec.loader.exec_module(importlib.util.module_from_spec(spec))
        assert os.environ["DIFFCOURSE_PROGRESS"] == after
