# Two commands: `make book` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU build of torch, used where no NVIDIA GPU is found. GPU users: see README.
TORCH_CPU       ?= torch==2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Threads for torch on CPU; `make test` runs one torch process at a time.
export OMP_NUM_THREADS ?= $(shell nproc 2>/dev/null || echo 2)
export PYDEVD_DISABLE_FILE_VALIDATION := 1
# The labs' trained models (diffcourse.recipes) are cached here, so a lab that reuses an earlier
# lab's model loads it; a fresh clone starts empty, and `make clean` empties it.
export DIFFCOURSE_CACHE ?= $(CURDIR)/_build/.model_cache

.PHONY: setup book test lint unit nbval book-strict built clean chromium links browser screenshots lab lab-check kernel repository planted

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "$(PYTHON) is older than Python 3.10, which the course needs: make PYTHON=python3.12 (or another)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	  echo "torch already in $(VENV): keeping it"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "NVIDIA GPU found: installing torch with CUDA from PyPI"; \
	  $(BIN)/python -m pip install -q torch; \
	elif $(BIN)/python -m pip install -q --no-deps --no-index "$(TORCH_CPU)" 2>/dev/null; then \
	  echo "no GPU: installed the CPU build of torch found on this disk ($(TORCH_CPU))"; \
	  $(BIN)/python -m pip install -q "$(TORCH_CPU)"; \
	else \
	  echo "no GPU: installing the CPU build of torch ($(TORCH_CPU)) from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/python -m pip install -q "$(TORCH_CPU)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
	$(BIN)/python -m pip install -q -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

# The site serves MathJax itself (npm's mathjax, pinned by package-lock.json), so it reads offline.
setup: node_modules/.package-lock.json

node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null || { echo "npm is missing: install Node.js (18 or newer) with npm; the book serves MathJax from node_modules/"; exit 1; }
	npm ci --no-audit --no-fund

# Debian's Chromium for the browser test (`make browser`, part of `make test`; `make book` does not
# need it). Where it can't be installed, that test skips and says why.
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium for the browser test"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
	    || echo "could not install chromium: the browser test will be skipped"; \
	else \
	  echo "no chromium, and no apt-get as root to install it: the browser test will be skipped"; \
	fi

book: setup
	$(BIN)/jupyter-book build . --path-output .
	@echo "Open _build/html/index.html in a browser."

# ruff keeps the package, the tests and the labs tidy (settings in pyproject.toml; the labs' 79
# columns in notebooks/ruff.toml). `ruff format` and `ruff check --fix` repair most of what it finds.
LINTED := diffcourse tests notebooks scripts _ext
lint: setup
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

unit: setup
	$(BIN)/python -m pytest -q tests --ignore=tests/test_built_book.py --ignore=tests/test_links.py --ignore=tests/test_browser.py --ignore=tests/test_lab.py

# Notebooks run once each, one after another (never two torch processes at once). Each lab that
# passes is stored with its outputs in the book's execution cache (notebooks/conftest.py), so the
# book build that follows renders this run instead of executing the labs a second time.
nbval: setup
	DIFFCOURSE_NB_CACHE=_build/.jupyter_cache $(BIN)/python -m pytest -q --nbval-lax notebooks

book-strict: setup
	$(BIN)/jupyter-book build . --path-output . -W -n --keep-going

# After the build: every lab page carries its figures, every chapter is in the navigation.
built: book-strict
	DIFFCOURSE_REQUIRE_BOOK=1 $(BIN)/python -m pytest -q tests/test_built_book.py

# Every link and image reference inside the built site resolves (the page, and its #anchor).
links: book-strict
	DIFFCOURSE_REQUIRE_BOOK=1 $(BIN)/python -m pytest -q tests/test_links.py

# Every page in headless Chromium, offline: no console error, maths typeset, figures decoded, navigation.
browser: book-strict chromium
	DIFFCOURSE_REQUIRE_BOOK=1 $(BIN)/python -m pytest -q -rs tests/test_browser.py

# A PNG of each page in _build/screenshots/, 1280 and 390 pixels wide, for reviewers.
screenshots: book chromium
	$(BIN)/python tests/browser.py _build/screenshots

# The repository address is set once, as repository.url in _config.yml; this copies it into each
# lab's install cell (the labs need it as text, for Colab). Run it after changing the address.
repository: setup
	$(BIN)/python scripts/set_repository.py

# JupyterLab on the labs, with the course's kernel: the set-up above plus the optional `lab` group
# (JupyterLab and ipywidgets, for the gamma sliders of labs 5 and 6). `make book` and `make test`
# don't need it. LAB_FLAGS passes options through (the test: a free port, no browser, a token).
lab: $(VENV)/.lab-installed
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $(LAB_AS_ROOT) $(LAB_FLAGS)

# JupyterLab refuses to run as root unless told (containers, CI)
LAB_AS_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root)

$(VENV)/.lab-installed: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e ".[lab]"
	touch $@

# `make lab` starts from this set-up and lists every lab with the course's kernel (tests/test_lab.py).
lab-check: setup
	DIFFCOURSE_REQUIRE_LAB=1 $(BIN)/python -m pytest -q tests/test_lab.py

# For a Jupyter front end installed elsewhere: register this venv's Python as the kernel
# "Python (diffcourse)" for your user, then pick it in that front end's kernel menu.
kernel: $(VENV)/.installed
	$(BIN)/python -m ipykernel install --user --name diffcourse --display-name "Python (diffcourse)"

test: lint unit nbval book-strict built links browser lab-check

# Each lab against an error planted on purpose in a formula it teaches (scripts/planted.py lists
# them): every lab must stop at one of its asserts. About half as long as nbval. `make test` runs
# only the quick ones (caught before their lab trains anything), in tests/test_planted.py.
planted: setup
	$(BIN)/python scripts/planted.py

clean:
	rm -rf _build .pytest_cache
