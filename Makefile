# The course's commands (see README.md). `make book` and `make test` set up the venv on first use
# (and again when pyproject.toml, requirements.txt or constraints.txt change); `make setup` alone
# does only that. PYTHON is the interpreter that creates the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# CPU torch comes from PyTorch's CPU index (PyPI's Linux torch is the CUDA build, over 2 GB with its
# nvidia-* packages). Set TORCH_INDEX= (empty) to take torch from PyPI or your own index instead.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# auto = GPT-2 small when it can be loaded, else the course model ioi-mini.
PATCHLAB_MODEL ?=
# The released exercises, run by nbval in `make test` as learners get them. (The chapters run in
# `make book`, on the course model, and from the learner's install on GPT-2's code path in tests/e2e/test_install.py.)
READER_NOTEBOOKS = exercises/*/*.ipynb
# `make test` runs this many pytest workers (pytest-xdist), each on one test file or class at a time, with one
# torch thread each: most tests wait on one single-threaded process (a kernel, a grading run).
TEST_WORKERS ?= 2
# OpenMP threads sleep instead of spinning while they wait: on a busy machine spinning made small
# torch operations 10-100 times slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup book lint test test-fast release

setup: $(STAMP)

$(STAMP): pyproject.toml requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install --no-deps -c constraints.txt $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) torch
	$(BIN)/pip install -r requirements.txt
	touch $@

book: $(STAMP)
	PATCHLAB_MODEL=$(PATCHLAB_MODEL) PLOTLY_RENDERER=notebook $(BIN)/jupyter-book build . -W -n --keep-going

# ruff's checks and formatter and mypy on the library, its developer tools and the grader (configured in
# pyproject.toml). `ruff format patchlab patchlab_dev autograder` fixes what the format check finds.
lint: $(STAMP)
	$(BIN)/ruff check patchlab patchlab_dev autograder
	$(BIN)/ruff format --check patchlab patchlab_dev autograder
	$(BIN)/mypy

# The lint, the test suite (both tiers, tests/README.md), then every reader notebook executed as learners get
# it (offline, course model). This is what CI runs.
test: $(STAMP) lint
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=25
	OMP_NUM_THREADS=1 PATCHLAB_MODEL=ioi-mini HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist loadscope --nbval-lax --nbval-current-env $(READER_NOTEBOOKS)

# The unit tier (tests/unit/: in-process, no kernel, sandbox, browser or build) without its tests marked
# slow (sweeps by position, every check on both grading models), for the edit loop.
test-fast: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadscope --durations=10 -m "not slow" tests/unit

# Before publishing a release: checks the version, course.toml, the notebooks' install lines and
# Colab links and a clean tree, runs the as-shipped test (tests/e2e/test_install.py), then prints the
# commands that publish it. RELEASE_FLAGS=--dry-run while course.toml's repository is a placeholder.
RELEASE_FLAGS ?=
release: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python tools/release.py $(RELEASE_FLAGS)
