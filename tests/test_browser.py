"""The built book as a reader meets it: every page in headless Chromium, served from 127.0.0.1 with
the network cut off. `make browser` runs it after the strict build (with DIFFCOURSE_REQUIRE_BOOK=1,
so that a missing build fails); on its own it skips when there is no build. It skips, saying so,
only where no Chromium is installed."""
from __future__ import annotations

import os
import time
from urllib.parse import urlsplit

import pytest
from browser import HTML, INSPECT_JS, find_chromium, offline_browser, serve, toc_pages

if not HTML.is_dir():
    if os.environ.get("DIFFCOURSE_REQUIRE_BOOK") == "1":
        raise RuntimeError(f"no built book at {HTML}: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)
if not find_chromium():
    pytest.skip("no Chromium installed: `make setup` installs Debian's chromium where it runs as root "
                "with apt-get (or set CHROMIUM to a Chromium binary)", allow_module_level=True)

PAGES = toc_pages()
LABS = [p for p in PAGES if p.startswith("notebooks/")]


@pytest.fixture(scope="module")
def book(request: pytest.FixtureRequest) -> dict:
    """Walk the book as a reader would: from the site's front door, page after page by each
    page's "next" link, inspecting each. Pages the walk missed are then opened directly, so that
    a broken link fails the navigation test alone."""
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
            name = urlsplit(page.url).path.lstrip("/").removesuffix(".html")
            pages[name] = {**page.evaluate(INSPECT_JS), "console_errors": list(errors)}
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

    seconds = time.perf_counter() - start
    displays = sum(p["typeset"] for p in pages.values())
    inline = sum(p["inline"] for p in pages.values())
    figures = sum(pages[lab]["decoded"] for lab in LABS if lab in pages)
    summary = (f"browser: {len(pages)} pages, {displays} display and {inline} inline equations typeset by MathJax, "
               f"{figures} lab figures decoded, {len(refused)} requests to other hosts, in {seconds:.0f} s")

    def report() -> None:  # what was checked, printed once the tests have run, even under -q
        plugins = request.config.pluginmanager
        with plugins.get_plugin("capturemanager").global_and_fixture_disabled():
            plugins.get_plugin("terminalreporter").write_line("\n" + summary)

    request.addfinalizer(report)
    return {"order": order, "pages": pages, "refused": refused}


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


@pytest.mark.parametrize("name", LABS)
def test_every_lab_figure_decodes(book, name):
    page = book["pages"][name]
    assert page["decoded"] >= 1, "the lab page shows no figure"
    assert page["decoded"] == page["images"], "an image on the page did not decode"
