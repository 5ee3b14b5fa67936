"""scripts/planted.py: every plant still matches the package's code once and changes it, each lab
has one, a stale plant is refused by name, and the quick plants (those a lab catches before it
trains anything) stop their labs at an assert here, in `make test`; `make planted` runs them all."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import planted  # noqa: E402


@pytest.mark.parametrize("plant", planted.PLANTS, ids=lambda p: f"{p.lab}: {p.what}")
def test_each_plant_matches_the_package_once_and_changes_it(plant, tmp_path):
    assert (ROOT / "notebooks" / plant.lab).is_file()
    package = tmp_path / "diffcourse"
    shutil.copytree(ROOT / "diffcourse", package)
    before = (package / plant.file).read_text()
    planted.apply(plant, package)
    after = (package / plant.file).read_text()
    assert after != before and after.count(plant.new) == before.count(plant.new) + 1
    compile(after, plant.file, "exec")  # the mistake is still Python


def test_every_lab_has_a_plant():
    labs = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted({p.lab for p in planted.PLANTS}) == labs


def test_a_stale_plant_is_refused_naming_the_file(tmp_path):
    shutil.copytree(ROOT / "diffcourse", tmp_path / "diffcourse")
    stale = planted.PLANTS[0]._replace(old="no such code")
    with pytest.raises(ValueError, match="diffcourse/targets.py"):
        planted.apply(stale, tmp_path / "diffcourse")


@pytest.mark.parametrize(
    "cells, status",
    [
        (["x = 1", "assert x == 1"], 0),
        (["x = 1", "assert x == 2"], 3),
        (["def f(x):\n    assert x > 0", "f(1)", "f(-1)"], 3),
        (["x = 1 / 0"], 4),
        (["import unittest", "unittest.TestCase().assertEqual(1, 2)"], 4),
    ],
    ids=[
        "passes",
        "an assert stops it",
        "an assert of an earlier cell's function",
        "another error",
        "an AssertionError raised outside the lab",
    ],
)
def test_a_lab_run_tells_an_assert_from_other_errors(cells, status, tmp_path, monkeypatch):
    """Only a failed assert counts as caught: a plant that crashes the lab proves nothing."""
    monkeypatch.chdir(tmp_path)  # _run_lab moves into the lab's folder
    cell = [{"cell_type": "code", "source": source} for source in cells]
    lab = tmp_path / "lab.ipynb"
    lab.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "# a lab"}, *cell]}))
    assert planted._run_lab(lab) == status


QUICK = [p for p in planted.PLANTS if p.quick]


@pytest.mark.parametrize("plant", QUICK, ids=lambda p: f"{p.lab}: {p.what}")
def test_a_quick_plant_stops_its_lab_at_an_assert_before_any_training(plant, tmp_path):
    """Each run gets an empty model cache: a lab that trained a model would leave it there."""
    cache = tmp_path / "cache"
    caught, said, _ = planted.check(plant, timeout=120, cache=cache)
    assert caught, f"{plant.lab}: {plant.what}: {said}"
    assert not cache.exists() or not any(cache.iterdir()), f"{plant.lab} trained a model"
