# The course's three commands (see README.md). PYTHON is the interpreter that creates the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# auto = GPT-2 small when it can be loaded, else the course model ioi-mini.
PATCHLAB_MODEL ?=
# OpenMP threads sleep instead of spinning while they wait: on a busy machine spinning made small
# torch operations 10-100 times slower.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup book test

setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -r requirements.txt

book:
	PATCHLAB_MODEL=$(PATCHLAB_MODEL) PLOTLY_RENDERER=notebook $(BIN)/jupyter-book build . -W -n --keep-going

test:
	$(BIN)/python -m pytest -q
