# Two commands for a fresh machine:
#   make lab    set up .venv and open the series in JupyterLab
#   make test   set up .venv (and Chromium where it can) and run every test
# While working: make test-fast (no notebooks, browser or long cases), make check, make notebooks
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LAB_SETTINGS := $(VENV)/share/jupyter/lab/settings/overrides.json

.PHONY: lab test test-fast check format notebooks benchmark chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.lab-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[lab]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $@ $(VENV)/.lab-installed

$(LAB_SETTINGS): binder/overrides.json | $(BIN)/python
	mkdir -p $(dir $@) && cp $< $@

lab: $(VENV)/.lab-installed $(LAB_SETTINGS)
	$(BIN)/jupyter lab $$([ "$$(id -u)" = 0 ] && echo --allow-root) notebooks/00_start_here.ipynb

# Browser tests drive Debian's Chromium; install it where we may, else they skip and say why.
chromium:
	@if ! command -v chromium >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "could not install chromium: browser tests will be skipped"; \
	  else \
	    echo "chromium not found: browser tests will be skipped (Debian/Ubuntu: sudo apt-get install chromium)"; \
	  fi; \
	fi

test: $(VENV)/.test-installed $(LAB_SETTINGS) chromium
	$(BIN)/python -m pytest

# The unit tests and docstring examples, without the tests marked slow (notebooks, browser,
# benchmark, the long reliability cases).
test-fast: $(VENV)/.test-installed
	$(BIN)/python -m pytest -m "not slow and not browser"

benchmark: $(VENV)/.lab-installed
	$(BIN)/python -m benchmarks

# Notebooks are built from notebooks/src/*.py (Jupytext percent format): edit those, then run this.
notebooks: $(VENV)/.test-installed
	$(BIN)/python tools/build_notebooks.py

# Format, lint and type-check with the settings in pyproject.toml; notebooks must match their sources.
check: $(VENV)/.test-installed
	$(BIN)/ruff format --check helpers tests benchmarks tools
	$(BIN)/ruff check helpers tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python tools/build_notebooks.py --check

format: $(VENV)/.test-installed
	$(BIN)/ruff format helpers tests benchmarks tools
	$(BIN)/ruff check --fix helpers tests benchmarks tools
