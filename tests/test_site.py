"""The site's own tooling, offline: Binder installs the CPU build of torch and the package; the
repository address is set once (_config.yml) and copied into the labs' install cells by
scripts/set_repository.py; search results show titles with maths as plain text (_ext/)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "_ext"))

import plain_titles  # noqa: E402
import set_repository  # noqa: E402


def test_binder_installs_the_cpu_build_of_torch_and_the_package():
    """Binder has no GPU; PyPI's Linux torch is the multi-GB CUDA build. The lab's first cell then
    finds diffcourse installed and installs nothing."""
    lines = [
        ln.split("#")[0].strip()
        for ln in (ROOT / "binder" / "requirements.txt").read_text().splitlines()
    ]
    lines = [ln for ln in lines if ln]
    assert "--index-url https://download.pytorch.org/whl/cpu" in lines
    torch = [ln for ln in lines if ln.startswith("torch")]
    # the same torch as `make setup` installs without a GPU, its CPU build pinned
    version = re.search(
        r"^TORCH_CPU\s*\?=\s*torch==(\S+)", (ROOT / "Makefile").read_text(), re.M
    ).group(1)
    assert torch == [f"torch=={version}+cpu"]
    assert "." in lines  # the package from the checkout Binder built
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime) and int(runtime.split(".")[1]) >= 9


def test_the_labs_install_from_the_repository_of_config_yml():
    assert set_repository.main(["--check"]) == 0


def test_set_repository_rewrites_only_the_install_line(tmp_path):
    lab = sorted((ROOT / "notebooks").glob("*.ipynb"))[0]
    copy = tmp_path / lab.name
    shutil.copy(lab, copy)
    before = copy.read_text(encoding="utf-8")
    old = set_repository.configured()
    assert set_repository.install_cell_address(copy) == old
    assert set_repository.set_address(copy, "https://github.com/someone/fork") is True
    after = copy.read_text(encoding="utf-8")
    assert set_repository.install_cell_address(copy) == "https://github.com/someone/fork"
    assert after.replace("https://github.com/someone/fork", old) == before  # nothing else changed
    assert set_repository.set_address(copy, "https://github.com/someone/fork") is False


def test_set_repository_refuses_a_bad_address(tmp_path):
    config = tmp_path / "_config.yml"
    config.write_text('repository:\n  url: "not a url"\n')
    with pytest.raises(ValueError, match="repository.url"):
        set_repository.configured(config)


@pytest.mark.parametrize(
    "tex, text",
    [
        (r"p(x \mid y)", "p(x | y)"),
        (r"\nabla_{x_t} \log p(y) = 0", "∇ₓₜ log p(y) = 0"),
        (r"\xi: \eta", "ξ: η"),
        (r"\hat{\epsilon}_\theta(x_t, t)", "ε̂_θ(xₜ, t)"),
        (r"\bar\alpha_{t-1}^{2}", "\u1fb1ₜ₋₁²"),  # NFC: alpha with macron, one character
        (r"\mathcal{K}_y,\ \text{class } y", "K_y, class y"),
    ],
)
def test_tex_to_text(tex, text):
    assert plain_titles.tex_to_text(tex) == text


def test_search_index_titles_become_plain_text(tmp_path):
    index = {
        "titles": [
            'From <span class="math notranslate nohighlight">\\(p(x)\\)</span> to plain',
            "Plain",
        ],
        "alltitles": {
            "Why \\nabla \\log p(y) = 0": [[0, "why"]],
            "Why ∇ log p(y) = 0": [[1, "x"]],
            "Plain": [[1, None]],
        },
        "docnames": ["a", "b"],
    }
    path = tmp_path / "searchindex.js"
    path.write_text("Search.setIndex(" + json.dumps(index) + ")")
    assert plain_titles.rewrite_search_index(path) == 2
    text = path.read_text()
    assert text.startswith("Search.setIndex(") and text.endswith(")")
    out = json.loads(text[len("Search.setIndex(") : -1])
    assert out["titles"] == ["From p(x) to plain", "Plain"]
    assert out["alltitles"] == {"Why ∇ log p(y) = 0": [[0, "why"], [1, "x"]], "Plain": [[1, None]]}
    assert out["docnames"] == ["a", "b"]


def test_references_link_their_arxiv_ids_and_spell_names_in_unicode():
    """sphinxcontrib-bibtex links an entry's eprint to arxiv.org; the same id in a note is text."""
    bib = (ROOT / "references.bib").read_text(encoding="utf-8")
    entries = dict(re.findall(r"@\w+\{([\w:-]+),(.*?)\n\}", bib, re.S))
    assert len(entries) > 20
    assert [key for key, body in entries.items() if re.search(r"note\s*=\s*\{arXiv", body)] == []
    # names in Unicode: pybtex's labels take a LaTeX accent's group whole ("KAKynkaanniemi+24")
    assert [key for key, body in entries.items() if re.search(r"\{\\", body)] == []
