"""The built book in headless Chromium, offline: what the browser test and `make screenshots` share.

Playwright drives Debian's Chromium (it downloads no browser of its own). A local http.server on
127.0.0.1 serves `_build/html`; every request to another host is refused and recorded, and
Chromium resolves no other name, so a page that needs the network shows up instead of waiting.

    python tests/browser.py _build/screenshots    # a PNG of every page, in `_toc.yml` order
"""
from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlsplit

import yaml

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"

# The flags the course asks for. Without the background, component-update and sync ones Chromium
# keeps calling home, and offline that floods refused connections; no proxy, and no name but
# 127.0.0.1 resolves, so nothing can leave this machine even past Playwright's router.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1280, "height": 900}

# Run in the page after `load`: wait until MathJax has typeset and the images have decoded,
# then report what a reader sees.
INSPECT_JS = r"""async () => {
  const article = document.querySelector("article") || document.body;
  const mathjax = !!(window.MathJax && window.MathJax.startup);
  if (mathjax) await window.MathJax.startup.promise;
  const imgs = [...article.querySelectorAll("img")];
  for (const img of imgs) if (img.loading === "lazy") img.loading = "eager";  // load them all now
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  await document.fonts.ready;
  // The text a reader sees, less code, scripts and MathJax's own output: TeX left in it was missed.
  const skip = "pre, code, script, style, mjx-container";
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT, {acceptNode: node =>
    node.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  let text = "";
  while (walker.nextNode()) text += walker.currentNode.data;
  // TeX control words (\nabla, \begin), \[ \( and $$: maths MathJax missed, or a title with maths
  // that a cross-reference printed as text.
  const raw = [...text.matchAll(/\\[a-zA-Z]+|\\[[(]|\$\$/g)].map(m => text.slice(Math.max(0, m.index - 30), m.index + 30));
  const next = document.querySelector("a.right-next");
  return {
    mathjax,
    displays: article.querySelectorAll("div.math").length,
    typeset: article.querySelectorAll("div.math mjx-container[display='true']").length,
    inline: article.querySelectorAll("span.math mjx-container").length,
    raw_tex: raw,
    images: imgs.length,
    decoded: imgs.filter(img => img.complete && img.naturalWidth > 0).length,
    next: next ? next.href : null,
  };
}"""


def toc_pages(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """Every page of the book in `_toc.yml` order (the root, then each chapter and its sections),
    as paths without a suffix: the order of the pages' "next" links."""
    data = yaml.safe_load(toc.read_text(encoding="utf-8"))

    def walk(entries: list[dict]) -> Iterator[str]:
        for entry in entries:
            if "file" in entry:
                yield entry["file"]
            for key in ("parts", "chapters", "sections"):
                yield from walk(entry.get(key, []))

    return [data["root"], *walk([data])]


def find_chromium() -> str | None:
    """Debian's Chromium (what `make setup` installs), or the one $CHROMIUM names."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the test's output readable
        pass


@contextlib.contextmanager
def serve(directory: Path = HTML) -> Iterator[str]:
    """Serve `directory` on 127.0.0.1 (a free port) for as long as the block runs; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_port}/"
        finally:
            server.shutdown()


@contextlib.contextmanager
def offline_browser(base: str, refused: list[str]) -> Iterator[BrowserContext]:
    """A Playwright browser context in a fresh profile that may reach `base` and nothing else: any
    other request is aborted and its URL appended to `refused`."""
    from playwright.sync_api import Route, sync_playwright

    origin = urlsplit(base).netloc
    # No proxy: the pages must load straight from 127.0.0.1.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}

    def only_local(route: Route) -> None:
        if urlsplit(route.request.url).netloc == origin:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as pw, tempfile.TemporaryDirectory(prefix="diffcourse-chromium-") as profile:
        context = pw.chromium.launch_persistent_context(
            profile, executable_path=find_chromium(), headless=True, args=CHROMIUM_ARGS, env=env,
            viewport=VIEWPORT, service_workers="block")
        try:
            context.route("**/*", only_local)
            yield context
        finally:
            context.close()


def screenshots(out: Path) -> list[Path]:
    """A full-page PNG of every page in `_toc.yml` order, taken once MathJax and the figures are in."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.png"):  # a page gone from the book takes its picture with it
        old.unlink()
    refused: list[str] = []
    written = []
    with serve() as base, offline_browser(base, refused) as context:
        page = context.new_page()
        for i, name in enumerate(toc_pages()):
            page.goto(base + name + ".html", wait_until="load")
            page.evaluate(INSPECT_JS)
            path = out / f"{i:02d}-{name.replace('/', '-')}.png"
            page.screenshot(path=str(path), full_page=True)
            written.append(path)
    if refused:
        print("requests to other hosts, refused:", *refused, sep="\n  ", file=sys.stderr)
    return written


if __name__ == "__main__":
    if not HTML.is_dir():
        sys.exit(f"no built book at {HTML}: run `make book` first")
    if not find_chromium():
        sys.exit("no chromium found: `make setup` installs Debian's chromium (as root, with apt-get)")
    for path in screenshots(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "screenshots"):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
