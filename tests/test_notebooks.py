"""The notebooks are committed without outputs (the book executes them) and each imports diffcourse."""

import ast
import io
import json
import re
import sys
import tokenize
from pathlib import Path
from unittest import mock

import pytest
import yaml

from diffcourse import plots

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs(path):
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path.name}: a cell has outputs"
            assert cell.get("execution_count") is None, (
                f"{path.name}: a cell has an execution count"
            )
    source = "".join("".join(c["source"]) for c in nb["cells"])
    # the device through the one helper, announced with the budget in the first cells
    assert "diffcourse" in source and "get_device(announce=True)" in source
    assert ".cuda()" not in source


# The repository is named once, in _config.yml (the launch buttons read it); each lab's install cell
# must name the same one.
REPOSITORY = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def first_code_cell(path: Path) -> str:
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_cell_installs_diffcourse_from_the_repository(path):
    """In Colab the first cell installs the package from the repository of _config.yml with %pip;
    where the package is there (a clone after `make setup`, nbval, the book build, a lab exported
    as a script) it does nothing."""
    transformer = pytest.importorskip("IPython.core.inputtransformer2").TransformerManager()
    source = first_code_cell(path)
    assert f"%pip install -q git+{REPOSITORY}" in source
    python = transformer.transform_cell(source)  # what IPython, or a lab's script, runs
    ran: list[tuple[str, str]] = []

    class Shell:
        def run_line_magic(self, name, line):
            ran.append((name, line))

    scope = {"get_ipython": Shell}
    exec(compile(python, path.name, "exec"), dict(scope))
    assert ran == [], "installed although diffcourse is importable"
    with mock.patch.dict(sys.modules, {"diffcourse": None}):  # None: it is not found
        exec(compile(python, path.name, "exec"), dict(scope))
    assert ran == [("pip", f"install -q git+{REPOSITORY}")], ran


def code_lines(source: str) -> int:
    """Lines holding code: a line with a token other than a comment or a line break (every line of
    a multi-line string counts; comments and blank lines do not)."""
    lines: set[int] = set()
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip and tok.type != tokenize.ENDMARKER:
            lines.update(range(tok.start[0], tok.end[0] + 1))
    return len(lines)


def test_code_lines_counts_code_not_comments():
    assert code_lines("# a comment\n\nx = 1  # more\ny = (\n    2\n)\n") == 4
    assert code_lines('s = """a\nb"""\n') == 2


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_a_lab_reads_in_under_200_lines(path):
    """COURSE.md, "Shape of the code": a lab reads top to bottom in under 200 lines; the machinery
    lives in the tested package."""
    cells = json.loads(path.read_text())["cells"]
    n = sum(code_lines("".join(c["source"])) for c in cells if c["cell_type"] == "code")
    assert n < 200, f"{path.name}: {n} lines of code"


# A cell that draws: it shows a figure, calls a drawing function of diffcourse.plots (not the
# helpers that only compute: density_grid, FrameCollector, sampled_frames), or runs an animation or
# the explorer.
DRAWS = re.compile(
    r"plt\.show\(\)|plots\.(?!density_grid|FrameCollector|sampled_frames)\w+\(|samples_grid\("
    r"|image_panels\(|class_grids\(|animate_\w+\(|explore_guidance\("
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_figure_has_a_caption_that_says_what_to_see(path):
    """The course's rule: a figure comes with a caption that says what to see in it, the markdown
    cell right after it (or, for an animation read while it plays, right before it)."""
    cells = json.loads(path.read_text())["cells"]

    def caption(i: int) -> bool:
        return (
            0 <= i < len(cells)
            and cells[i]["cell_type"] == "markdown"
            and "**What to see" in "".join(cells[i]["source"])
        )

    bare = [
        i
        for i, cell in enumerate(cells)
        if cell["cell_type"] == "code"
        and DRAWS.search("".join(cell["source"]))
        and not caption(i + 1)
        and not ("animate_" in "".join(cell["source"]) and caption(i - 1))
    ]
    assert not bare, f"{path.name}: cells {bare} draw a figure with no 'What to see' caption"


# The calls a cell may end with: their value shows nothing, or is the figure the cell is for.
# So may the drawing functions of diffcourse.plots whose value shows nothing (`shown_once`).
QUIET_ENDINGS = {
    "show",
    "print",
    "table",
    "glue_table",
    "animate_samples",
    "animate_images",
    "explore_guidance",
}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_cell_ends_with_a_value_the_book_would_print(path):
    """A cell whose last line is an expression shows that value under it on the page: glue(...)
    returns the glued number (a stray '0.9644166666666667' under lab 4's table), a drawing function
    its figure (shown a second time), and a closing ';' does not hide either under nbval, whose
    outputs the book renders (it runs cells without storing history, which the ';' check reads).
    The drawing functions of ``diffcourse.plots`` mark their value to show nothing instead."""
    loud = []
    for i, cell in enumerate(json.loads(path.read_text())["cells"]):
        if cell["cell_type"] != "code":
            continue
        lines = "".join(cell["source"]).splitlines()
        # an IPython magic (the install cell's %pip) reads as a statement that prints nothing
        magic = [line.lstrip().startswith(("%", "!")) for line in lines]
        code = [
            ln[: len(ln) - len(ln.lstrip())] + "pass" if m else ln for ln, m in zip(lines, magic)
        ]
        body = ast.parse("\n".join(code)).body
        if body and isinstance(body[-1], ast.Expr):
            call = body[-1].value
            fn = call.func if isinstance(call, ast.Call) else None
            name = getattr(fn, "attr", getattr(fn, "id", None))
            drawn_once = getattr(getattr(plots, name or "", None), "shown_once", False)
            if name not in QUIET_ENDINGS and not drawn_once:
                loud.append((i, ast.unparse(call)[:40]))
    assert not loud, f"{path.name}: cells end with a value the book would print: {loud}"
