"""One execution per lab for `make test`: nbval runs each lab, the book build reuses that run.

nbval executes every lab cell by cell in a real kernel, failing on any error or failed `assert`.
The book build (myst-nb, `execute_notebooks: cache`) would then execute every lab again. When the
environment variable DIFFCOURSE_NB_CACHE names the book's jupyter-cache folder, this hook stores
each lab that passed *every* cell, with the outputs nbval collected, in that cache, keyed (as
jupyter-cache keys it) by the lab's code. The build then finds the lab there and renders those
outputs instead of running it a second time. A lab with any failed or skipped cell is not stored,
and a lab whose code has changed since misses the cache: the build executes those itself.
"""

from __future__ import annotations

import copy
import os
from typing import Dict

import pytest

_runs: Dict[str, dict] = {}

# Text progress bars in the labs' kernels, which inherit this environment: nbval reads a cell's
# messages only once the cell has run, and where ipywidgets is installed (`make lab` adds it) the
# widget bars of a training send thousands, more than the kernel's queue holds
# (diffcourse.report.progress_bar).
os.environ.setdefault("DIFFCOURSE_PROGRESS", "text")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    nb = getattr(item.parent, "nb", None)
    if nb is None or not hasattr(item, "cell_num"):  # not an nbval cell
        return
    run = _runs.setdefault(
        str(item.parent.path),
        {"nb": nb, "outputs": {}, "ok": True, "seconds": 0.0},
    )
    if report.failed or report.skipped:
        run["ok"] = False
    elif report.when == "call":
        run["outputs"][item.cell_num] = list(item.test_outputs or [])
        run["seconds"] += report.duration


def pytest_sessionfinish(session):
    folder = os.environ.get("DIFFCOURSE_NB_CACHE")
    if not folder:
        return
    from diffcourse.recipes import seed_shift

    if seed_shift():  # other seeds' networks: a check, not the book's figures
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(folder)
    for path, run in _runs.items():
        nb = copy.deepcopy(run["nb"])
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        if not run["ok"] or len(run["outputs"]) != len(code):
            continue
        for count, cell in enumerate(code, start=1):
            cell.outputs = run["outputs"][count - 1]
            cell.execution_count = count
        cache.cache_notebook_bundle(
            CacheBundleIn(
                nb, path, data={"execution_seconds": run["seconds"]}
            ),
            check_validity=True,
            overwrite=True,
        )
        print(
            f"\n{os.path.basename(path)}: outputs stored for the book build ({run['seconds']:.0f} s)"
        )
