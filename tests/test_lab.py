"""`make lab` (issue 19): from the set-up, one command starts JupyterLab on notebooks/ with the
course's kernel. Started headless on a free port, asked for its contents and kernel specs over its
REST API, stopped by its process id. `make lab-check` runs this file (`make test` includes it)."""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
LABS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))

if not os.environ.get("DIFFCOURSE_REQUIRE_LAB") and not VENV_PYTHON.exists():
    pytest.skip("no .venv: run `make lab-check`", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def stop(proc: subprocess.Popen) -> None:
    """Stop make and the server it started (one process group), by make's process id."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def server():
    port, token = free_port(), secrets.token_hex(16)
    flags = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    log = open(ROOT / "_build" / "lab-check.log", "w") if (ROOT / "_build").is_dir() else None
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "lab", f"LAB_FLAGS={flags}"],
        cwd=ROOT,
        start_new_session=True,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base, deadline = (
        f"http://127.0.0.1:{port}",
        time.time() + 180,
    )  # the first run installs the group
    try:
        while True:
            try:
                get(f"{base}/api/status?token={token}")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(f"`make lab` did not start a server (exit code {proc.poll()})")
                time.sleep(0.5)
        yield base, token
    finally:
        stop(proc)
        if log:
            log.close()


def test_the_server_lists_every_lab(server):
    base, token = server
    listing = get(f"{base}/api/contents?token={token}")
    names = {item["name"] for item in listing["content"]}
    assert LABS and set(LABS) <= names, sorted(set(LABS) - names)


def test_the_labs_kernel_is_the_course_environment(server):
    """Every lab names a kernel the server has, and that kernel runs this venv's Python, where
    torch and diffcourse import (not a Python found elsewhere on the machine)."""
    base, token = server
    specs = get(f"{base}/api/kernelspecs?token={token}")
    for lab in LABS:
        name = json.loads((ROOT / "notebooks" / lab).read_text())["metadata"]["kernelspec"]["name"]
        assert name in specs["kernelspecs"], (lab, name, sorted(specs["kernelspecs"]))
        argv = specs["kernelspecs"][name]["spec"]["argv"]
        # the venv's own bin/ (its python is a link to the base one: compare unresolved paths)
        assert Path(os.path.abspath(argv[0])).parent == VENV_PYTHON.parent, (lab, argv)
    assert specs["default"] in specs["kernelspecs"]
    out = subprocess.run(
        [
            str(VENV_PYTHON),
            "-c",
            "import torch, diffcourse, ipywidgets; print(diffcourse.__file__)",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(out.stdout.strip()).resolve().is_relative_to(ROOT)
