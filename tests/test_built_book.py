"""Checks on the built HTML book. `make test` runs them after the book build (with
DIFFCOURSE_REQUIRE_BOOK=1, so that a missing build fails); on their own they skip when there is no
build."""

import json
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
LABS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
# pydata-sphinx-theme's box around a table (report.SCROLL_BOX), scrolling it sideways if need be
SCROLL_BOX = "pst-scrollable-table-container"

if not HTML.is_dir():
    if os.environ.get("DIFFCOURSE_REQUIRE_BOOK") == "1":
        raise RuntimeError(f"no built book at {HTML}: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_page_shows_its_figures(lab):
    """A lab's plots reach its page as images (an Agg backend in the kernel would drop them), none
    so wide that the page shrinks its text out of reading."""
    page = (HTML / "notebooks" / f"{lab}.html").read_text(encoding="utf-8")
    figures = re.findall(r'<img[^>]+src="\.\./_images/[^"]+\.png"', page)
    assert figures, f"{lab}.html has no figure"
    for src in re.findall(r'src="\.\./(_images/[^"]+\.png)"', page):
        assert (HTML / src).stat().st_size > 1000, src
        # at most plots.WIDTH (9.5 inches) at 100 dpi, and the tight box's margins: shrunk into
        # the 688-px column of a 1280-px window, its 8-point text still shows 8 px high
        width = int.from_bytes((HTML / src).read_bytes()[16:20], "big")  # the PNG header's
        assert width <= 970, f"{lab}.html: {src} is {width} px wide"


def test_every_chapter_is_built_and_linked_from_the_start_page():
    toc = (ROOT / "_toc.yml").read_text(encoding="utf-8")
    files = re.findall(r"file:\s*(\S+)", toc)
    index = (HTML / "book" / "00_welcome.html").read_text(encoding="utf-8")
    for f in files:
        assert (HTML / f"{f}.html").is_file(), f
        assert f"{Path(f).name}.html" in index, f"{f} is not in the navigation"


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_page_has_download_and_launch_buttons(lab):
    """Colab and Binder open the lab from the repository named once in _config.yml."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    repo, branch = config["repository"]["url"], config["repository"]["branch"]
    org_repo = repo.removeprefix("https://github.com/")
    colab, binder = config["launch_buttons"]["colab_url"], config["launch_buttons"]["binderhub_url"]
    page = (HTML / "notebooks" / f"{lab}.html").read_text(encoding="utf-8")
    for href in (
        f"../_sources/notebooks/{lab}.ipynb",
        f"{colab}/github/{org_repo}/blob/{branch}/notebooks/{lab}.ipynb",
        f"{binder}/v2/gh/{org_repo}/{branch}?urlpath=tree/notebooks/{lab}.ipynb",
    ):
        assert f'href="{href}"' in page, f"{lab}.html has no button to {href}"
    assert (HTML / "_sources" / "notebooks" / f"{lab}.ipynb").is_file()


# A Markdown table's separator row (report.table writes ":---" and "---:"; CommonMark's typography
# turns the dashes into an em dash) left on the page as text.
RAW_TABLE = re.compile(r"\|:?(?:-{3,}|\u2014):?\|")


@pytest.mark.parametrize("lab", LABS)
def test_every_lab_table_is_rendered_as_a_table(lab):
    """A lab's report.table shows a Markdown output; the page shows it as an HTML table (myst-nb
    reads Markdown outputs with MyST's parser, nb_render_markdown_format in _config.yml), not as a
    paragraph of pipes (CommonMark, myst-nb's default, has no tables)."""
    page = (HTML / "notebooks" / f"{lab}.html").read_text(encoding="utf-8")
    text = re.sub(r"<[^>]+>", "", page)
    assert not RAW_TABLE.search(text), f"{lab}.html shows a Markdown table as text"
    assert "<table" in page, f"{lab}.html shows no table"


def test_every_table_has_the_themes_look_and_scrolling_box():
    """Tables pasted from a lab (report.glue_table: HTML) get the class and the box the theme gives
    a page's own tables; without them a table has no rules and runs off a phone's screen."""
    bare = []
    for page in sorted(HTML.glob("*/*.html")):
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"<table[^>]*>", text):
            before = text[max(0, m.start() - 60) : m.start()]
            if not re.search(r'class="[^"]*\btable\b', m.group()) or SCROLL_BOX not in before:
                bare.append(f"{page.relative_to(HTML)}: {m.group()}")
    assert bare == []


# TeX a reader should never see as text: control words (\nabla), \( \[ and $$.
RAW_TEX = re.compile(r"\\[a-zA-Z]+|\\[\[(]|\$\$")


def test_page_titles_and_search_titles_are_plain_text():
    """The browser tab shows a page's <title> and the search page lists titles as text, and MathJax
    typesets neither: a heading with maths needs a plain `{title}` beside it (chapter 2), and
    _ext/plain_titles.py writes the search index's section titles in Unicode."""
    titles = {
        p.relative_to(HTML).as_posix(): re.search(
            r"<title>(.*?)</title>", p.read_text(encoding="utf-8"), re.S
        )
        for p in HTML.rglob("*.html")
        if p.relative_to(HTML).parts[0] not in ("_static", "reports")
    }
    raw = {page: m.group(1) for page, m in titles.items() if m and RAW_TEX.search(m.group(1))}
    assert raw == {}
    text = (HTML / "searchindex.js").read_text(encoding="utf-8")
    index = json.loads(text[text.index("(") + 1 : text.rindex(")")])
    assert [
        t for t in [*index["titles"], *index["alltitles"]] if RAW_TEX.search(t) or "<" in t
    ] == []
