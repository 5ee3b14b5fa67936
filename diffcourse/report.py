"""Showing results in a lab: real tables, and figures handed to the book's text.

- :func:`table` shows rows as a table (Markdown in a Jupyter kernel, so the built book renders a
  real table that never scrolls sideways; aligned plain text when the lab runs as a script) and
  returns the Markdown.
- :func:`glue` hands a value to the chapter's text through myst-nb's ``glue`` (the page then writes
  ``{glue:text}`name:.3f```), and does nothing where myst-nb or a kernel is missing (Colab, scripts).
- :func:`progress_bar` is the training and sampling loops' progress bar.
"""

from __future__ import annotations

import numbers
import os
from collections import abc
from typing import Any, Mapping, Optional, Sequence, Union

from .checks import check_bool, check_callable, check_mapping, check_name, check_strs

Row = Union[Sequence[Any], Mapping[str, Any]]


# Under nbval a text bar redraws at most once per this many seconds (progress_bar)
TEXT_BAR_SECONDS = 5.0


def progress_bar(iterable=None, progress: bool = True, **kwargs):
    """A tqdm progress bar over ``iterable`` (tqdm's keyword arguments as given): tqdm.auto's, a
    widget in a notebook where ipywidgets is installed and text elsewhere, or text everywhere when
    the environment variable DIFFCOURSE_PROGRESS is "text". nbval sets it (notebooks/conftest.py):
    nbval reads a cell's messages only after the cell has run, and a widget's thousands of updates
    overflow the kernel's message queue, which then drops the cell's last message too, so nbval
    stops with "Timeout of 5 seconds exceeded waiting for output".

    Each redraw of a text bar is a message too (tqdm flushes it), up to ten a second. Measured
    here, a cell of 8,000 messages passed under nbval and one of 10,000 timed out, so a cell of a
    quarter of an hour would. A text bar therefore redraws at most every ``TEXT_BAR_SECONDS``
    unless ``mininterval`` is given: 9,000 messages would take half a day.

    ``progress``: the caller's flag of that name (False: no bar), checked here for all of them."""
    if not check_bool(progress, "progress"):
        kwargs["disable"] = True
    mode = os.environ.get("DIFFCOURSE_PROGRESS", "auto").strip() or "auto"
    if mode == "text":
        from tqdm.std import tqdm

        kwargs.setdefault("mininterval", TEXT_BAR_SECONDS)
    elif mode == "auto":
        from tqdm.auto import tqdm
    else:
        raise ValueError(f"DIFFCOURSE_PROGRESS must be 'auto' or 'text', got {mode!r}")
    return tqdm(iterable, **kwargs)


def _in_kernel() -> bool:
    """True inside a Jupyter kernel (a notebook, nbval, the book build), False in a script."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _plain(value: Any) -> Any:
    """A 0-dim tensor or a NumPy scalar as the Python number it holds."""
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    if hasattr(value, "numel") and callable(value.numel) and value.numel() == 1:
        return value.item()
    return value


def _cell(value: Any, fmt: Optional[str]) -> str:
    value = _plain(value)
    if value is None:
        return "-"
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real) and fmt:
        return format(value, fmt)
    if isinstance(value, tuple) and len(value) == 2 and fmt:  # (mean, std): "mean ± std"
        mean, std = (_plain(v) for v in value)
        if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in (mean, std)):
            return f"{format(mean, fmt)} ± {format(std, fmt)}"
    return str(value)


def _spread(value: Any) -> list:
    """A row's cells after its name: a list, a tuple or a 1-dim tensor spreads into cells, anything
    else is one cell."""
    if isinstance(value, (list, tuple)) or getattr(value, "ndim", None) == 1:
        return list(value)
    return [value]


class TableText(str):
    """The Markdown :func:`table` returns. As the last expression of a cell it shows nothing more:
    :func:`table` has shown the table already."""

    def _ipython_display_(self) -> None:
        pass


def table(
    rows: Union[Sequence[Row], Mapping[str, Mapping[str, Any]]],
    header: Optional[Sequence[str]] = None,
    floatfmt: Union[str, Sequence[Optional[str]]] = ".3f",
    title: Optional[str] = None,
    show: bool = True,
) -> TableText:
    """Show ``rows`` as a table and return its Markdown.

    Args:
        rows: a list of sequences (one per row, with ``header`` naming the columns), a list of
            mappings (column name -> value; ``header`` defaults to the first row's keys), a
            mapping row name -> mapping (the row names become the first column), or a mapping
            row name -> values (a list, a tuple or a 1-dim tensor: the row's other cells; anything
            else: its one other cell), with ``header`` naming the columns.
        header: the column names.
        floatfmt: the format of real numbers, one for all columns or one per column (None: str()).
            Ints print as they are; None prints as "-"; a pair (mean, std) prints as "mean ± std",
            both in the column's format.
        title: a line in bold above the table.
        show: False only returns the Markdown.
    """
    check_bool(show, "show")
    if isinstance(rows, Mapping) and all(isinstance(v, Mapping) for v in rows.values()):
        names = list(rows)
        if header is None:
            keys = list(rows[names[0]]) if names else []
            header = ["", *keys]
        else:
            keys = list(header[1:])
        body = [[name, *[rows[name].get(k) for k in keys]] for name in names]
    elif isinstance(rows, Mapping):
        if any(isinstance(v, Mapping) for v in rows.values()):
            raise TypeError("rows: a mapping's values must be all mappings or none")
        body = [[name, *_spread(value)] for name, value in rows.items()]
    else:
        if isinstance(rows, (str, bytes)) or not isinstance(rows, abc.Iterable):
            raise TypeError(
                f"rows must be a sequence of rows or a mapping, got {type(rows).__name__}"
            )
        rows = list(rows)
        if rows and isinstance(rows[0], Mapping):
            keys = list(header) if header is not None else list(rows[0])
            header = keys
            body = [[row.get(k) for k in keys] for row in rows]
        else:
            body = [list(row) for row in rows]
    if not body:
        raise ValueError("rows is empty: a table needs at least one row")
    if header is None:
        raise ValueError("header must name the columns of rows given as sequences")
    header = [str(h) for h in header]
    width = len(header)
    for i, row in enumerate(body):
        if len(row) != width:
            raise ValueError(f"rows: row {i} has {len(row)} cells, the header {width}")
    fmts = [floatfmt] * width if isinstance(floatfmt, str) or floatfmt is None else list(floatfmt)
    if len(fmts) != width:
        raise ValueError(
            f"floatfmt must give one format or one per column ({width}), got {len(fmts)}"
        )
    cells = [[_cell(v, f) for v, f in zip(row, fmts)] for row in body]
    numeric = [
        all(isinstance(_plain(row[j]), numbers.Number) or row[j] is None for row in body)
        for j in range(width)
    ]

    def escape(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| " + " | ".join(escape(h) for h in header) + " |",
        "|" + "|".join("---:" if num else ":---" for num in numeric) + "|",
    ]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in cells]
    markdown = "\n".join(([f"**{title}**", ""] if title else []) + lines)
    if show:
        if _in_kernel():
            from IPython.display import Markdown, display

            display(Markdown(markdown))
        else:
            widths = [max(len(x) for x in col) for col in zip(header, *cells)]
            just = lambda text, j: text.rjust(widths[j]) if numeric[j] else text.ljust(widths[j])  # noqa: E731
            out = [title] if title else []
            out.append("  ".join(just(h, j) for j, h in enumerate(header)).rstrip())
            out.append("  ".join("-" * w for w in widths))
            out += ["  ".join(just(c, j) for j, c in enumerate(row)).rstrip() for row in cells]
            print("\n".join(out))
    return TableText(markdown)


def glue(name: str, value: Any, display: bool = False) -> Any:
    """``myst_nb.glue(name, value, display=display)`` where a lab runs in a kernel with myst-nb (the
    book build, nbval); elsewhere (Colab without myst-nb, a script) nothing. Returns ``value``, with
    a 0-dim tensor or NumPy scalar turned into the Python number the page formats."""
    check_name(name, "name")
    check_bool(display, "display")
    value = _plain(value)
    if _in_kernel():
        try:
            from myst_nb import glue as myst_glue
        except ImportError:
            return value
        myst_glue(name, value, display=display)
    return value


# pydata-sphinx-theme's box around a table, which scrolls it sideways where the page is narrower
SCROLL_BOX = "pst-scrollable-table-container"


def glue_table(name: str, markdown: str) -> str:
    """Glue a Markdown table (what :func:`table` returns) under ``name`` as HTML, so that a book page
    pastes it from the lab with the ``{glue}`` directive and its ``:doc:`` option (myst-nb pastes
    HTML, not Markdown, from another document). Where no kernel with myst-nb runs the lab, nothing
    is glued. Returns ``markdown``."""
    check_name(name, "name")
    if not isinstance(markdown, str):
        raise TypeError(f"markdown must be a str, got {type(markdown).__name__}")
    if _in_kernel():
        try:
            from markdown_it import MarkdownIt
            from myst_nb import glue as myst_glue
        except ImportError:
            return markdown
        from IPython.display import HTML

        html = MarkdownIt("commonmark").enable("table").render(markdown)
        # the theme's table look and scrolling box, which Sphinx gives its own tables, not pasted HTML
        html = html.replace("<table>", f'<div class="{SCROLL_BOX}"><table class="table">')
        myst_glue(name, HTML(html.replace("</table>", "</table></div>")), display=False)
    return markdown


def glue_key(name: str) -> str:
    """A row's name as part of a glue key, in the letters, digits and underscores a page's
    ``{glue:text}`` role reads: lower case, ", " and " " to "_", "." and "+" to "p"
    ("CFG 1.5" -> "cfg_1p5", "CFG++" -> "cfgpp", "blue, corrector" -> "blue_corrector")."""
    check_name(name, "name")
    key = name.lower().replace(", ", "_").replace(" ", "_").replace(".", "p").replace("+", "p")
    if not key.replace("_", "").isalnum():
        raise ValueError(
            f"name {name!r} gives the glue key {key!r}, with characters a page cannot read"
        )
    return key


def glue_rows(
    prefix: str, rows: Mapping[str, Mapping[str, Any]], keys: Sequence[str]
) -> Mapping[str, Mapping[str, Any]]:
    """:func:`glue` each ``rows[name][key]`` of a comparison table (name -> {column: value}) under
    ``f"{prefix}_{key}_{glue_key(name)}"`` ("mix_spread_cfgpp"), row by row, for the chapter's text
    to quote. Returns ``rows``."""
    check_name(prefix, "prefix")
    if not isinstance(rows, Mapping):
        raise TypeError(f"rows must be a mapping name -> row, got {type(rows).__name__}")
    if isinstance(keys, str):
        raise TypeError("keys must be a sequence of column names, not one str")
    for name, row in rows.items():
        for key in keys:
            if key not in row:
                raise ValueError(f"keys: rows[{name!r}] has no column {key!r}")
            glue(f"{prefix}_{key}_{glue_key(name)}", row[key])
    return rows


def glue_nested(template: str, values: Mapping[Any, Mapping[str, Any]]) -> dict:
    """Glue every value of a table of results, ``values[setting][key]``, under the name
    ``template.format(*setting, key=key)`` (a setting that is not a tuple is the one argument),
    with "." turned into "p" so that a page's ``{glue:text}`` role reads it:
    ``glue_nested("well_{key}_{0:g}", {1.5: {"frechet": 0.8}})`` glues ``well_frechet_1p5``.
    Returns the same table with plain Python numbers."""
    if not isinstance(template, str):
        raise TypeError(f"template must be a str, got {type(template).__name__}")
    if "{key" not in template:
        raise ValueError(f"template must name {{key}}, got {template!r}")
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping, got {type(values).__name__}")
    out = {}
    for setting, row in values.items():
        if not isinstance(row, Mapping):
            raise TypeError(f"values[{setting!r}] must be a mapping, got {type(row).__name__}")
        args = setting if isinstance(setting, tuple) else (setting,)
        out[setting] = {
            key: glue(template.format(*args, key=key).replace(".", "p"), value)
            for key, value in row.items()
        }
    return out


def pivot(
    values: Mapping[Any, Sequence[Any]],
    measures: Sequence[str],
    index: str,
    label: Any = str,
) -> tuple:
    """``(rows, header)`` for :func:`table` from ``values[(kind, key)] = (m_1, ..., m_k)``: one row
    per key (in first-seen order), and the columns measure by measure, kind by kind, named
    ``f"{measure} {label(kind)}"``; a (kind, key) pair without values shows as "-". The table of a
    sweep: rows are the scales gamma, columns each method's measures side by side."""
    check_mapping(values, "values", "mapping (kind, key) -> measures", "(kind, key) pair")
    measures = check_strs(measures, "measures", empty=False)
    check_callable(label, "label")
    for pair, got in values.items():
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise ValueError(f"values: keys must be (kind, key) pairs, got {pair!r}")
        if len(got) != len(measures):
            raise ValueError(f"values[{pair!r}] has {len(got)} measures, not {len(measures)}")
    kinds = list(dict.fromkeys(kind for kind, _ in values))
    keys = list(dict.fromkeys(key for _, key in values))
    cols = [(kind, i) for i in range(len(measures)) for kind in kinds]
    rows = [
        [key, *[values.get((k, key), [None] * len(measures))[i] for k, i in cols]] for key in keys
    ]
    return rows, [index, *[f"{measures[i]} {label(k)}" for k, i in cols]]


def glue_all(values: Mapping[Any, Any], *patterns: str) -> Mapping[Any, Any]:
    """:func:`glue` every entry of ``values`` under a name made from its key:
    ``pattern.format(*key)`` (a key that is not a tuple counts as a 1-tuple; a nested mapping's keys
    are joined into one tuple). With several patterns each value is a sequence and ``patterns[i]``
    names its i-th item, e.g. ``glue_all(result, "agree_{}_{:g}", "spread_{}_{:g}")`` glues
    ``result["CFG", 4.0] = (0.99, 0.62)`` as ``agree_CFG_4`` and ``spread_CFG_4``. Returns
    ``values``."""
    if not isinstance(values, Mapping):
        raise TypeError(f"values must be a mapping, got {type(values).__name__}")
    for i, pattern in enumerate(check_strs(patterns, "patterns", empty=False)):
        check_name(pattern, f"patterns[{i}]")

    def flat(mapping: Mapping, prefix: tuple):
        for key, value in mapping.items():
            key = prefix + (key if isinstance(key, tuple) else (key,))
            if isinstance(value, Mapping):
                yield from flat(value, key)
            else:
                yield key, value

    for key, value in flat(values, ()):
        items = [value] if len(patterns) == 1 else list(value)
        if len(items) != len(patterns):
            raise ValueError(
                f"values[{key!r}] holds {len(items)} items for {len(patterns)} patterns"
            )
        for pattern, item in zip(patterns, items):
            glue(pattern.format(*key), item)
    return values
