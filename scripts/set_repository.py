"""The repository address lives in one place, `repository.url` in `_config.yml` (the launch and
repository buttons read it). Each lab's install cell needs it too, as a literal, since in Colab the
lab runs with no checkout beside it; this script copies it there.

    python scripts/set_repository.py           # rewrite the labs' install cells from _config.yml
    python scripts/set_repository.py --check   # only say which labs disagree (exit status 1 if any)

Only the address in the line `%pip install -q git+ADDRESS` of each lab's first code cell changes,
byte for byte in place: the rest of the notebook, its formatting included, stays as it was.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\s*%pip install -q git\+(\S+)$", re.M)


def configured(config: Path = ROOT / "_config.yml") -> str:
    """The repository address of _config.yml."""
    url = yaml.safe_load(config.read_text(encoding="utf-8"))["repository"]["url"]
    if not re.fullmatch(r"https://[^\s\"'\\]+", url):
        raise ValueError(f"repository.url in {config.name} must be an https address, got {url!r}")
    return url


def install_cell_address(path: Path) -> str:
    """The address the lab's install cell (its first code cell) installs from."""
    cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
    source = "".join(next(c for c in cells if c["cell_type"] == "code")["source"])
    found = LINE.findall(source)
    if len(found) != 1:
        raise ValueError(
            f"{path.name}: the first code cell must install from the repository once"
            f" (`%pip install -q git+ADDRESS`), found {len(found)}"
        )
    return found[0]


def set_address(path: Path, url: str) -> bool:
    """Point the lab's install cell at ``url``; returns whether the file changed."""
    old = install_cell_address(path)
    if old == url:
        return False
    text = path.read_text(encoding="utf-8")
    # The line as json.dumps writes it inside the notebook (quotes escaped).
    before, after = (json.dumps(f"%pip install -q git+{u}")[1:-1] for u in (old, url))
    if text.count(before) != 1:
        raise ValueError(
            f"{path.name}: expected the install line once in the file, found {text.count(before)}"
        )
    path.write_text(text.replace(before, after), encoding="utf-8")
    assert install_cell_address(path) == url
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 if a lab disagrees"
    )
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/*.ipynb")
    args = parser.parse_args(argv)
    url = configured()
    paths = args.notebooks or sorted((ROOT / "notebooks").glob("*.ipynb"))
    wrong = [p for p in paths if install_cell_address(p) != url]
    if args.check:
        for p in wrong:
            print(f"{p.name}: installs from {install_cell_address(p)}, _config.yml says {url}")
        return 1 if wrong else 0
    for p in wrong:
        set_address(p, url)
        print(f"{p.name}: now installs from {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
