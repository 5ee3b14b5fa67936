"""Search results show titles as plain text, not TeX.

Sphinx's search index holds every section title as text: a title with maths, such as chapter 3's
"Why $\\nabla_{x_t} \\log p(y) = 0$", is stored as "Why \\nabla_{x_t} \\log p(y) = 0", and the search
page prints that. Once the index is written, this extension rewrites its titles in Unicode
("Why ∇ₓₜ log p(y) = 0"), and the heading printed atop a printed page likewise. A page's own title
(the browser tab, the search result) is set in its source: a heading with maths gets a plain
`{title}` directive beside it (chapter 2 has one).
"""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

SYMBOLS = {
    "alpha": "α",
    "beta": "β",
    "gamma": "γ",
    "delta": "δ",
    "epsilon": "ε",
    "varepsilon": "ε",
    "zeta": "ζ",
    "eta": "η",
    "theta": "θ",
    "kappa": "κ",
    "lambda": "λ",
    "mu": "μ",
    "nu": "ν",
    "xi": "ξ",
    "pi": "π",
    "rho": "ρ",
    "sigma": "σ",
    "tau": "τ",
    "phi": "φ",
    "varphi": "φ",
    "chi": "χ",
    "psi": "ψ",
    "omega": "ω",
    "Gamma": "Γ",
    "Delta": "Δ",
    "Theta": "Θ",
    "Lambda": "Λ",
    "Sigma": "Σ",
    "Phi": "Φ",
    "Psi": "Ψ",
    "Omega": "Ω",
    "nabla": "∇",
    "partial": "∂",
    "mid": "|",
    "vert": "|",
    "cdot": "·",
    "times": "×",
    "to": "→",
    "rightarrow": "→",
    "leftarrow": "←",
    "infty": "∞",
    "le": "≤",
    "leq": "≤",
    "ge": "≥",
    "geq": "≥",
    "neq": "≠",
    "approx": "≈",
    "propto": "∝",
    "sim": "~",
    "in": "∈",
    "sum": "Σ",
    "prod": "∏",
    "int": "∫",
    "sqrt": "√",
    "pm": "±",
    "ldots": "…",
    "dots": "…",
    "cdots": "⋯",
    "top": "ᵀ",
    "emptyset": "∅",
    "varnothing": "∅",
}
ACCENTS = {
    "hat": "\u0302",
    "widehat": "\u0302",
    "bar": "\u0304",
    "overline": "\u0304",
    "tilde": "\u0303",
}
SUB = dict(zip("0123456789+-=()aehijklmnoprstuvx", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ"))
SUP = dict(zip("0123456789+-=()in", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁱⁿ"))
GROUP = r"\{((?:[^{}]|\{[^{}]*\})*)\}"


def _script(body: str, table: dict, mark: str) -> str:
    """A sub- or superscript in Unicode where every character has one, else as _x or ^(xy)."""
    if body and all(c in table or c in table.values() for c in body):
        return "".join(table.get(c, c) for c in body)
    return mark + (body if len(body) == 1 else f"({body})")


def tex_to_text(tex: str) -> str:
    """Plain Unicode for the maths of a title: "p(x \\mid y)" -> "p(x | y)"."""
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)\b", "", tex)
    s = re.sub(r"\\(?:[,;:! ]|quad\b|qquad\b)", " ", s)
    for _ in range(3):  # nested groups, innermost first
        s = re.sub(
            r"\\(?:text|mathrm|mathbf|mathit|mathcal|mathbb|boldsymbol|operatorname)\s*" + GROUP,
            r"\1",
            s,
        )
    s = re.sub(r"\\([A-Za-z]+)", lambda m: SYMBOLS.get(m.group(1), m.group(0)), s)
    accent = r"\\(" + "|".join(ACCENTS) + r")\s*(?:" + GROUP + r"|(\S))"
    s = re.sub(accent, lambda m: (m.group(2) or m.group(3)) + ACCENTS[m.group(1)], s)
    for mark, table in (("_", SUB), ("^", SUP)):
        s = re.sub(
            re.escape(mark) + r"([^{\s])", lambda m, t=table, k=mark: _script(m.group(1), t, k), s
        )
        s = re.sub(
            re.escape(mark) + GROUP,
            lambda m, t=table, k=mark: _script(m.group(1).replace(" ", ""), t, k),
            s,
        )
    s = re.sub(r"\\([A-Za-z]+)", r"\1", s)
    s = s.replace("{", "").replace("}", "").replace("\\", "")
    return unicodedata.normalize("NFC", re.sub(r"\s+", " ", s).strip())


def plain_title(title: str) -> str:
    """A title as the search index stores it (text with TeX, or HTML with \\(...\\) maths) in plain text."""
    if "\\" not in title and "<" not in title:
        return title
    title = re.sub(r"\\\((.*?)\\\)", lambda m: tex_to_text(m.group(1)), title)  # delimited maths
    title = re.sub(r"<[^>]+>", "", title)  # the maths' <span>
    return tex_to_text(title) if "\\" in title else title


def rewrite_search_index(path: Path) -> int:
    """Rewrite the titles of Sphinx's searchindex.js in plain text; returns how many changed."""
    text = path.read_text(encoding="utf-8")
    prefix, suffix = "Search.setIndex(", ")"
    if not (text.startswith(prefix) and text.rstrip().endswith(suffix)):
        raise ValueError(f"{path}: not a Sphinx search index")
    index = json.loads(text[len(prefix) : text.rstrip().rindex(suffix)])
    changed = sum(plain_title(t) != t for t in index["titles"]) + sum(
        plain_title(t) != t for t in index["alltitles"]
    )
    index["titles"] = [plain_title(t) for t in index["titles"]]
    merged: dict = {}
    for title, places in index["alltitles"].items():
        merged.setdefault(plain_title(title), []).extend(places)
    index["alltitles"] = merged
    path.write_text(prefix + json.dumps(index, sort_keys=True) + suffix, encoding="utf-8")
    return changed


def _finished(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        index = Path(app.outdir) / "searchindex.js"
        if index.is_file():
            rewrite_search_index(index)


def _page_context(app, pagename, templatename, context, doctree) -> None:
    """The theme prints the heading's text as ``pagetitle`` at the top of a printed page: with
    maths, that is TeX. Use the page's plain `{title}` where it has one, else the text in Unicode."""
    title = context.get("pagetitle", "")
    if "\\" in title:
        context["pagetitle"] = (
            doctree.get("title") if doctree is not None else None
        ) or tex_to_text(title)


def setup(app):
    app.connect("html-page-context", _page_context, priority=900)  # after sphinx_book_theme's (500)
    app.connect("build-finished", _finished)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
