"""No broken link inside the built site: every relative href and src in every page resolves to a
file of the site, and every #anchor to an id on the page it names. And no page loads anything
from another host (links out to papers are fine; scripts, styles, fonts and images are not).
`make links` runs it after the strict build, which already fails on a broken cross-reference;
this checks what the theme and the extensions write around them. On its own it skips when there
is no build (DIFFCOURSE_REQUIRE_BOOK=1 turns that into a failure)."""

from __future__ import annotations

import os
from functools import lru_cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

HTML = Path(__file__).resolve().parents[1] / "_build" / "html"

if not HTML.is_dir():
    if os.environ.get("DIFFCOURSE_REQUIRE_BOOK") == "1":
        raise RuntimeError(f"no built book at {HTML}: run `make book` first")
    pytest.skip("the book is not built (make book)", allow_module_level=True)

# Attributes that make the browser fetch something as the page loads (a plain <a href> does not).
LOADS = {
    ("script", "src"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("video", "src"),
    ("audio", "src"),
    ("embed", "src"),
    ("link", "href"),
}


class Page(HTMLParser):
    """The ids of one HTML file, and every (tag, attribute, url) it refers to."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refs: list[tuple[str, str, str]] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for key, value in attrs:
            if value is None:
                continue
            if key in ("id", "name"):
                self.ids.add(value)
            elif key in ("href", "src"):
                self.refs.append((tag, key, value))


@lru_cache(maxsize=None)
def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


# The site's pages; _static/ holds the theme's Jinja macro files, which are templates, not pages.
PAGES = sorted(p for p in HTML.rglob("*.html") if p.relative_to(HTML).parts[0] != "_static")


def broken_refs(page: Path) -> list[str]:
    broken = []
    for tag, attr, url in parse(page).refs:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or url == "#":
            continue  # another site (checked below when it loads), mailto:, data:, javascript:, "#"
        target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            broken.append(f"<{tag} {attr}={url!r}>: no such file")
        elif (
            parts.fragment
            and target.suffix == ".html"
            and unquote(parts.fragment) not in parse(target).ids
        ):
            broken.append(f"<{tag} {attr}={url!r}>: no such anchor")
    return broken


def test_the_site_has_pages():
    assert len(PAGES) > 10


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_every_internal_link_resolves(page):
    assert broken_refs(page) == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(HTML)))
def test_nothing_loads_from_another_host(page):
    external = [
        url
        for tag, attr, url in parse(page).refs
        if (tag, attr) in LOADS
        and (urlsplit(url).scheme in ("http", "https") or url.startswith("//"))
    ]
    assert external == []
