"""The built book as a reader meets it: every page in headless Chromium, served from 127.0.0.1 with
the network cut off, in a 1280-pixel window and on a 390-pixel phone screen. `make browser` runs
it after the strict build (with DIFFCOURSE_REQUIRE_BOOK=1, so that a missing build fails); on its
own it skips when there is no build. It skips, saying so, only where no Chromium is installed.

What it checks, on every page: the navigation reaches it in `_toc.yml` order; nothing is loaded
from another host; no console error; every display equation typeset and no TeX left as text
anywhere on the page (article, navigation, footer); the browser tab's title is plain text; at both
widths the page never scrolls sideways and each display equation fits its box or scrolls inside
it from its start; at 1280 pixels no code cell, code block or printed output scrolls sideways;
every lab figure decodes; every animation loads and its slider moves a frame; search results show
no TeX."""

from __future__ import annotations

import os
import re
import time
from urllib.parse import urlsplit

import pytest
from browser import (
    ANIMATIONS_JS,
    HTML,
    INSPECT_JS,
    LAYOUT_JS,
    PHONE,
    VIEWPORT,
    find_chromium,
    move_sliders,
    offline_browser,
    serve,
    toc_pages,
)

if not HTML.is_dir():
    if os.environ.get("DIFFCOURSE_REQUIRE_BOOK") == "1":
        raise RuntimeError(f"no built book at {HTML}: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)
if not find_chromium():
    pytest.skip(
        "no Chromium installed: `make chromium` installs Debian's chromium where it runs as root "
        "with apt-get (or set CHROMIUM to a Chromium binary)",
        allow_module_level=True,
    )

PAGES = toc_pages()
LABS = [p for p in PAGES if p.startswith("notebooks/")]
WIDTHS = [VIEWPORT["width"], PHONE["width"]]

# Pages that must show an animation (diffcourse.plots.animate_samples / animate_images). The lead
# adds each page here when its lab's animation cell lands. Every animation found on any page is
# checked whether listed or not.
ANIMATED_PAGES: list[str] = [
    "notebooks/05_classifier_free_guidance",
    "notebooks/07_guidance_on_images",
]

# Pages whose code cells, code blocks or printed outputs are still wider than the page's code box
# at 1280 pixels (lab lines over 79 columns, padded text tables, long lines in the chapters' code
# blocks and in chapter 9's solutions): their check is expected to fail (xfail, not strict) until
# they are fixed. The lead removes each page as its fix lands (an XPASS says it is ready) and
# empties the list; the summary printed after the run lists every wide block on every page.
WIDE_CODE_PAGES: set[str] = set()

# Searches run on the search page; their results (titles and excerpts) must show no TeX.
SEARCHES = ["conditional", "vanishes"]
TEX = re.compile(r"\\[a-zA-Z]+|\\[\[(]|\$\$")


def search(page, base: str, query: str) -> dict:
    """Run one search on the site's search page; wait for the results and for MathJax to typeset
    their excerpts; return the result titles and the excerpts' text less typeset maths."""
    page.goto(f"{base}search.html?q={query}", wait_until="load")
    page.wait_for_function(
        "() => /Search finished/.test(document.getElementById('search-results').textContent)",
        timeout=20_000,
    )
    page.wait_for_function(
        "() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=20_000
    )
    page.wait_for_timeout(400)  # the last results' excerpts arrive, then a typeset pass
    page.evaluate("() => MathJax.startup.promise")
    return page.evaluate("""() => {
      const items = [...document.querySelectorAll('#search-results li')];
      const text = el => { const c = el.cloneNode(true); c.querySelectorAll('mjx-container').forEach(m => m.remove());
                           return c.textContent; };
      return {titles: items.map(li => text(li.querySelector('a'))),
              excerpts: items.map(li => li.querySelector('p') ? text(li.querySelector('p')) : '')};
    }""")


@pytest.fixture(scope="module")
def book(request: pytest.FixtureRequest) -> dict:
    """Walk the book as a reader would: from the site's front door, page after page by each
    page's "next" link, inspecting each in a 1280-pixel window, then narrowed to a phone's 390
    pixels. Pages the walk missed are then opened directly, so that a broken link fails the
    navigation test alone. Then a few searches."""
    start = time.perf_counter()
    refused: list[str] = []
    order: list[str] = []
    pages: dict[str, dict] = {}
    with serve() as base, offline_browser(base, refused) as context:
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        def inspect() -> str:
            """Inspect the page at the window's width, then resized to the other width (a reflow
            is what the page shows when loaded at that width), which the next page loads at."""
            name = urlsplit(page.url).path.lstrip("/").removesuffix(".html")
            found = page.evaluate(INSPECT_JS)
            found["animations"] = move_sliders(page, page.evaluate(ANIMATIONS_JS))
            here = page.viewport_size["width"]
            found["layout"] = {here: page.evaluate(LAYOUT_JS)}
            other = PHONE if here == VIEWPORT["width"] else VIEWPORT
            page.set_viewport_size(other)
            found["layout"][other["width"]] = page.evaluate(LAYOUT_JS)
            pages[name] = {**found, "console_errors": list(errors)}
            errors.clear()
            return name

        # index.html sends the reader on to the root page.
        page.goto(base, wait_until="load")
        page.wait_for_url(f"{base}{PAGES[0]}.html")
        page.wait_for_load_state("load")
        while True:
            order.append(inspect())
            url = pages[order[-1]]["next"]
            if url is None or len(order) > len(PAGES):
                break
            page.goto(url, wait_until="load")
        for name in PAGES:
            if name not in pages:
                page.goto(f"{base}{name}.html", wait_until="load")
                inspect()
        searches = {query: search(page, base, query) for query in SEARCHES}
        search_errors = list(errors)

    seconds = time.perf_counter() - start
    displays = sum(p["typeset"] for p in pages.values())
    inline = sum(p["inline"] for p in pages.values())
    figures = sum(pages[lab]["decoded"] for lab in LABS if lab in pages)
    wide = {w: sum(bool(p["layout"][w]["page_width"] > w) for p in pages.values()) for w in WIDTHS}
    bad_eq = {w: sum(len(p["layout"][w]["bad_equations"]) for p in pages.values()) for w in WIDTHS}
    scrolling = {
        w: sum(len(p["layout"][w]["scrolling_equations"]) for p in pages.values()) for w in WIDTHS
    }
    inline_cut = {w: sum(len(p["layout"][w]["inline_cut"]) for p in pages.values()) for w in WIDTHS}
    blocks = sum(p["layout"][VIEWPORT["width"]]["blocks"] for p in pages.values())
    wide_blocks = [
        (n, b) for n, p in pages.items() for b in p["layout"][VIEWPORT["width"]]["wide_blocks"]
    ]
    animations = [a for p in pages.values() for a in p["animations"]]
    lines = [
        f"browser: {len(pages)} pages at {' and '.join(map(str, WIDTHS))} px, in {seconds:.0f} s, offline "
        f"({len(refused)} requests to other hosts)",
        f"  maths: {displays} display and {inline} inline equations typeset; no TeX as text; titles plain",
        *(
            f"  at {w} px: {wide[w]} pages scroll sideways; {bad_eq[w]} display equations cut off, "
            f"{scrolling[w]} scroll inside their own box; {inline_cut[w]} inline formulas cut off"
            for w in WIDTHS
        ),
        f"  at {VIEWPORT['width']} px: {blocks} code and output blocks measured, {len(wide_blocks)} scroll sideways"
        + "".join(f"\n    {n}: {b}" for n, b in wide_blocks),
        f"  {figures} lab figures decoded; {len(animations)} animations, "
        f"{sum(bool(a['moved']) for a in animations)} moved a frame by their slider",
        "  search: " + ", ".join(f"{q!r} {len(r['titles'])} results" for q, r in searches.items()),
    ]

    def report() -> None:  # what was checked, printed once the tests have run, even under -q
        plugins = request.config.pluginmanager
        with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
            plugins.get_plugin("terminalreporter").write_line("\n" + "\n".join(lines))

    request.addfinalizer(report)
    return {
        "order": order,
        "pages": pages,
        "refused": refused,
        "searches": searches,
        "search_errors": search_errors,
    }


def test_navigation_reaches_every_chapter_in_toc_order(book):
    assert book["order"] == PAGES


def test_nothing_is_loaded_from_another_host(book):
    """The site reads offline: MathJax, fonts, scripts and styles all come from the site itself."""
    assert not book["refused"], book["refused"]


@pytest.mark.parametrize("name", PAGES)
def test_page_loads_without_console_errors(book, name):
    assert book["pages"][name]["console_errors"] == []


@pytest.mark.parametrize("name", PAGES)
def test_every_display_equation_is_typeset(book, name):
    page = book["pages"][name]
    if page["displays"]:
        assert page["mathjax"], "the page has display maths but MathJax did not start"
    assert page["typeset"] == page["displays"], "a display equation has no MathJax output"
    assert page["raw_tex"] == [], "TeX left as text"


@pytest.mark.parametrize("name", PAGES)
def test_page_title_is_plain_text(book, name):
    """The browser tab (and the search result) shows the page's <title>, which MathJax never
    typesets: a heading with maths needs a plain `{title}` directive beside it (see chapter 2)."""
    title = book["pages"][name]["title"]
    assert title and not TEX.search(title), f"<title> shows TeX: {title!r}"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_page_never_scrolls_sideways(book, name, width):
    layout = book["pages"][name]["layout"][width]
    assert layout["page_width"] <= layout["width"], (
        f"the page is {layout['page_width']} px wide in a {layout['width']} px window; sticking out:\n"
        + "\n".join(layout["sticking_out"])
    )


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_display_equations_fit_or_scroll_in_their_box(book, name, width):
    bad = book["pages"][name]["layout"][width]["bad_equations"]
    assert bad == [], "\n".join(bad)


@pytest.mark.parametrize("name", PAGES)
def test_display_equations_fit_a_desktop_windows_column(book, name):
    """At 1280 px every display equation fits its column (688 px; less in a box), so a derivation
    reads without scrolling each step sideways; a phone's may scroll, in the equation's own box."""
    wide = book["pages"][name]["layout"][VIEWPORT["width"]]["scrolling_equations"]
    assert wide == [], "\n".join(wide)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_inline_formulas_are_never_cut_off(book, name, width):
    """An inline formula wider than the column scrolls in its own box (_static/diffcourse.css): MathJax
    3 does not break one across lines."""
    cut = book["pages"][name]["layout"][width]["inline_cut"]
    assert cut == [], "\n".join(cut)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", PAGES)
def test_table_cells_of_code_keep_room_for_an_identifier(book, name, width):
    """On a phone the welcome page's notation table squeezed its code column to 70 px, three
    letters a line, beside its formulas; a cell holding code is at least 8 em wide at either width,
    the table scrolling in its box if it must (_static/diffcourse.css)."""
    squeezed = book["pages"][name]["layout"][width]["squeezed_code"]
    assert squeezed == [], "\n".join(squeezed)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            p,
            marks=pytest.mark.xfail(strict=False, reason="lab lines still wider than the code box"),
        )
        if p in WIDE_CODE_PAGES
        else p
        for p in PAGES
    ],
)
def test_code_and_outputs_fit_at_1280_pixels(book, name):
    """A code cell, a code block or a printed output that scrolls sideways hides the end of its
    lines: lab lines fit 79 columns, and wide results print as tables."""
    wide = book["pages"][name]["layout"][VIEWPORT["width"]]["wide_blocks"]
    assert wide == [], "scrolls sideways at 1280 px:\n" + "\n".join(wide)


@pytest.mark.parametrize("name", LABS)
def test_every_lab_figure_decodes(book, name):
    page = book["pages"][name]
    assert page["decoded"] >= 1, "the lab page shows no figure"
    assert page["decoded"] == page["images"], "an image on the page did not decode"


def test_every_animation_plays_offline(book):
    """Every animation on any page shows its first frame, and its slider, moved one step with the
    keyboard, shows the next frame: its frames are embedded, nothing is fetched."""
    broken = [
        f"{name}: {a}"
        for name, page in book["pages"].items()
        for a in page["animations"]
        if not (
            a["shown"] and a["frames"] > 1 and a["moved"] and a["src"].startswith("data:image/")
        )
    ]
    assert broken == []


@pytest.mark.parametrize("name", ANIMATED_PAGES)
def test_animated_page_has_its_animation(book, name):
    assert book["pages"][name]["animations"], f"{name} shows no animation"


@pytest.mark.parametrize("query", SEARCHES)
def test_search_results_show_no_tex(book, query):
    """Result titles are plain text (chapter 2's {title}, _ext/plain_titles.py for section titles);
    the maths in the excerpts is typeset (_static/search-maths.js), bar a formula cut by the
    excerpt's edge."""
    found = book["searches"][query]
    assert found["titles"], f"no results for {query!r}"
    assert [t for t in found["titles"] if TEX.search(t)] == []
    # An excerpt is cut at a fixed length, so a formula may begin or end outside it; MathJax then
    # cannot typeset that piece. Any other TeX left is maths that was not typeset.
    cut = re.compile(r"^(?:(?!\\[\[(]).)*?\\[\])]|\\[\[(](?:(?!\\[\])]).)*$", re.S)
    inner = [e for e in found["excerpts"] if TEX.search(cut.sub("", e))]
    assert inner == [], "TeX in a search excerpt, not at its cut edges"
    assert book["search_errors"] == []
