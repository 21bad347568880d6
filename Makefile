# Understudy: `make demo` runs the main job end to end, `make test` runs the tests.
# Both create .venv on a fresh machine and install the pinned dev set (CPU torch).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The demo's time budget (minutes): with the 2-3 minutes of a fresh .venv, `make demo`
# ends within 11 on a 2-core CPU. `understudy demo` alone defaults to 10.
DEMO_MINUTES ?= 8
STAMP := $(VENV)/.installed
# torch's CPU build: requirements-dev.txt pins torch==X, which an index may serve as the
# CUDA build (PyPI does on Linux x86_64: several GB). TORCH_INDEX=URL installs torch==X from
# that index first, e.g. make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
TORCH_VERSION := $(shell sed -n 's/^torch==//p' requirements-dev.txt)

.PHONY: venv demo test test-slow lint format bench clean

venv: $(STAMP)

$(STAMP): requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(PY) -m pip install -q --index-url $(TORCH_INDEX) torch==$(TORCH_VERSION))
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

demo: venv
	$(VENV)/bin/understudy demo --minutes $(DEMO_MINUTES)

test: venv
	$(PY) -m pytest -q

test-slow: venv
	$(PY) -m pytest -q -m slow

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
