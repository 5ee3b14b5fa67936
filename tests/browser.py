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
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-proxy-server",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
VIEWPORT = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}  # a phone held upright (CSS pixels)

# TeX a reader should never see as text: control words (\nabla, \begin), \( \[ and $$.
TEX_JS = r"/\\[a-zA-Z]+|\\[[(]|\$\$/g"

# Run in the page after `load`: wait until MathJax has typeset and the images have decoded,
# then report what a reader sees.
INSPECT_JS = (
    r"""async () => {
  const TEX = """
    + TEX_JS
    + r""";
  const article = document.querySelector("article") || document.body;
  const mathjax = !!(window.MathJax && window.MathJax.startup);
  if (mathjax) await window.MathJax.startup.promise;
  const imgs = [...article.querySelectorAll("img")];
  for (const img of imgs) if (img.loading === "lazy") img.loading = "eager";  // load them all now
  await Promise.all(imgs.map(img => img.decode().catch(() => null)));
  await document.fonts.ready;
  // The text a reader sees, less code, scripts and MathJax's own output: TeX left in it was missed.
  // The whole page: the article, the navigation, the page's table of contents, the footer links.
  const skip = "pre, code, script, style, mjx-container, template";
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: node =>
    node.parentElement.closest(skip) ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  let text = "";
  while (walker.nextNode()) text += walker.currentNode.data;
  // TeX control words (\nabla, \begin), \[ \( and $$: maths MathJax missed, or a title with maths
  // that a cross-reference printed as text.
  const raw = [...text.matchAll(TEX)].map(m => text.slice(Math.max(0, m.index - 30), m.index + 30));
  const next = document.querySelector("a.right-next");
  return {
    mathjax,
    title: document.title,
    displays: article.querySelectorAll("div.math").length,
    typeset: article.querySelectorAll("div.math mjx-container[display='true']").length,
    inline: article.querySelectorAll("span.math mjx-container").length,
    raw_tex: raw,
    images: imgs.length,
    decoded: imgs.filter(img => img.complete && img.naturalWidth > 0).length,
    next: next ? next.href : null,
  };
}"""
)


# Run in the page once INSPECT_JS has run, at each window width: what sticks out sideways. The
# page must not scroll sideways; a display equation must fit its box or scroll inside it, from its
# start; code cells and printed outputs are measured (each that scrolls is listed).
LAYOUT_JS = r"""() => {
  // After a resize the theme slides its sidebars in or out (CSS transitions): measure the layout
  // they end in, as a page loaded at this width shows it.
  for (const a of document.getAnimations()) if (a instanceof CSSTransition) a.finish();
  const vw = document.documentElement.clientWidth;
  const article = document.querySelector("article") || document.body;
  const oneLine = s => s.replace(/\s+/g, " ").trim().slice(0, 70);
  const clipped = el => {  // the part of the window the element's clipping ancestors leave visible
    let left = 0, right = vw;
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (getComputedStyle(p).overflowX === "visible") continue;
      const r = p.getBoundingClientRect();
      left = Math.max(left, r.left); right = Math.min(right, r.right);
    }
    return [left, right];
  };
  const out = {width: vw, page_width: document.documentElement.scrollWidth, sticking_out: [],
               equations: 0, scrolling_equations: [], bad_equations: [], wide_blocks: []};
  if (out.page_width > vw) {  // say what widens the page: the outermost elements past its edge
    for (const el of document.body.querySelectorAll("*")) {
      const r = el.getBoundingClientRect();
      if (r.right <= vw + 1 || r.width === 0 || getComputedStyle(el).position === "fixed") continue;
      const [, right] = clipped(el);
      if (right < vw) continue;  // inside a box that clips or scrolls
      const parent = el.parentElement.getBoundingClientRect();
      if (parent.right > vw + 1 && el.parentElement !== document.body) continue;
      out.sticking_out.push(`<${el.tagName.toLowerCase()} class="${el.className}"> to x = ${Math.round(r.right)}: ${oneLine(el.textContent)}`);
    }
  }
  const items = window.MathJax && MathJax.startup && MathJax.startup.document;
  for (const box of article.querySelectorAll("div.math mjx-container[display='true']")) {
    out.equations += 1;
    box.scrollLeft = 0;
    const found = items ? items.getMathItemsWithin(box) : [];
    const tex = oneLine(found.length ? found[0].math : box.textContent);
    const b = box.getBoundingClientRect(), m = box.querySelector("mjx-math").getBoundingClientRect();
    const [left, right] = clipped(box);
    const scrolls = ["auto", "scroll"].includes(getComputedStyle(box).overflowX);
    let why = null;
    if (b.left < left - 1 || b.right > right + 1)
      why = `its box (x = ${Math.round(b.left)} to ${Math.round(b.right)}) is cut off at x = ${Math.round(left)} to ${Math.round(right)}`;
    else if (m.left < b.left - 1)
      why = `it starts ${Math.round(b.left - m.left)} px left of its box, where no scrolling reaches`;
    else if (m.right > b.right + 1 && !(scrolls && box.scrollWidth >= m.right - b.left - 1))
      why = `it is ${Math.round(m.right - b.right)} px wider than its box, which does not scroll`;
    else if (m.right > b.right + 1 || box.scrollWidth > box.clientWidth + 1) {  // a \tag'ed
      // one's mjx-math is as wide as its box: its overflow is the box's
      const over = Math.max(m.right - b.right, box.scrollWidth - box.clientWidth);
      out.scrolling_equations.push(`${tex}: ${Math.round(over)} px wider than its box`);
    }
    if (why) out.bad_equations.push(`${tex}: ${why}`);
  }
  // Inline maths: MathJax 3 does not break a formula across lines, so one longer than the column's
  // width runs past its edge. It is cut if a clipping ancestor hides part of it, and no ancestor
  // between them scrolls.
  out.inline_cut = [];
  for (const box of article.querySelectorAll("mjx-container:not([display='true'])")) {
    const r = box.getBoundingClientRect();
    if (r.width === 0) continue;  // in a closed dropdown
    for (let p = box.parentElement; p && p !== document.body; p = p.parentElement) {
      const overflow = getComputedStyle(p).overflowX;
      if (overflow === "visible") continue;
      if (["auto", "scroll"].includes(overflow)) break;  // a box of its own that scrolls
      const c = p.getBoundingClientRect();
      if (r.left < c.left - 1 || r.right > c.right + 1) {
        const found = items ? items.getMathItemsWithin(box) : [];
        const tex = oneLine(found.length ? found[0].math : box.textContent);
        out.inline_cut.push(`${tex}: x = ${Math.round(r.left)} to ${Math.round(r.right)}, cut at ${Math.round(c.left)} to ${Math.round(c.right)}`);
        break;
      }
    }
  }
  // Table cells holding inline code, which breaks anywhere: squeezed narrower than 8 em (128 px)
  // beside wider columns, an identifier reads a few letters a line.
  out.squeezed_code = [];
  for (const cell of article.querySelectorAll("table td:has(code.literal)")) {
    const w = cell.getBoundingClientRect().width;
    if (w > 0 && w < 128) out.squeezed_code.push(`${Math.round(w)} px: ${oneLine(cell.textContent)}`);
  }
  const blocks = article.querySelectorAll("pre, div.cell_output > div.output:not(:has(pre))");
  out.blocks = blocks.length;
  for (const block of blocks) {
    if (block.scrollWidth <= block.clientWidth + 1) continue;
    const kind = block.closest(".cell_output") ? "output" : block.closest(".cell_input") ? "code cell" : "code block";
    const lines = block.textContent.split("\n");
    const widest = Math.max(...lines.map(l => l.length));
    out.wide_blocks.push(`${kind} starting "${oneLine(lines.find(l => l.trim()) || "")}" (widest line ${widest} characters)`);
  }
  return out;
}"""

# Run in the page: every animation (matplotlib's JavaScript HTML animation, diffcourse.plots): its
# first frame decoded, and the ids of its image and slider.
ANIMATIONS_JS = r"""async () => {
  const out = [];
  for (const div of document.querySelectorAll("article div.animation")) {
    const img = div.querySelector("img"), slider = div.querySelector("input[type=range]");
    if (img && img.src) await img.decode().catch(() => null);
    out.push({img: img ? img.id : null, slider: slider ? slider.id : null,
              frames: slider ? Number(slider.max) + 1 : 0,
              src: img ? img.src.slice(0, 40) : "", shown: !!img && img.complete && img.naturalWidth > 0});
  }
  return out;
}"""


def move_sliders(page, animations: list[dict]) -> list[dict]:
    """Press the right arrow key on each animation's slider, as a reader would; record whether the
    slider moved to frame 1 and the image changed to a decoded frame."""
    for anim in animations:
        anim["moved"] = False
        if not (anim["img"] and anim["slider"] and anim["frames"] > 1):
            continue
        before = page.eval_on_selector(f"#{anim['img']}", "img => img.src")
        page.focus(f"#{anim['slider']}")
        page.keyboard.press("ArrowRight")
        anim["moved"] = page.eval_on_selector(
            f"#{anim['img']}",
            """async (img, before) => { await img.decode().catch(() => null);
               return img.src !== before && img.naturalWidth > 0
                 && document.getElementById(img.id.replace('_anim_img', '_anim_slider')).value === '1'; }""",
            before,
        )
        page.keyboard.press("Home")
    return animations


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
    """Debian's Chromium (what `make chromium` installs), or the one $CHROMIUM names."""
    return (
        os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    )


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

    with (
        sync_playwright() as pw,
        tempfile.TemporaryDirectory(prefix="diffcourse-chromium-") as profile,
    ):
        context = pw.chromium.launch_persistent_context(
            profile,
            executable_path=find_chromium(),
            headless=True,
            args=CHROMIUM_ARGS,
            env=env,
            viewport=VIEWPORT,
            service_workers="block",
        )
        try:
            context.route("**/*", only_local)
            yield context
        finally:
            context.close()


def screenshots(out: Path) -> list[Path]:
    """Full-page PNGs of every page in `_toc.yml` order, 1280 and 390 pixels wide (NN-page-1280.png,
    NN-page-390.png), taken once MathJax and the figures are in."""
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
            for size in (VIEWPORT, PHONE):
                page.set_viewport_size(size)
                path = out / f"{i:02d}-{name.replace('/', '-')}-{size['width']}.png"
                page.screenshot(path=str(path), full_page=True)
                written.append(path)
            page.set_viewport_size(VIEWPORT)
    if refused:
        print("requests to other hosts, refused:", *refused, sep="\n  ", file=sys.stderr)
    return written


if __name__ == "__main__":
    if not HTML.is_dir():
        sys.exit(f"no built book at {HTML}: run `make book` first")
    if not find_chromium():
        sys.exit(
            "no chromium found: `make chromium` installs Debian's chromium (as root, with apt-get)"
        )
    for path in screenshots(
        Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "_build" / "screenshots"
    ):
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
