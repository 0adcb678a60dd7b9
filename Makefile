# Two commands for a newcomer: `make demo` (the main job) and `make test` (everything checked).
# Both create .venv on first use and reinstall the project whenever pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
ifeq ($(OS),Windows_NT)
BIN := $(VENV)/Scripts
else
BIN := $(VENV)/bin
endif
STAMP := $(VENV)/.installed

.PHONY: help venv demo test lint typecheck lab bench clean

help:
	@echo "make demo   run the main job: a server, synthetic metrics in, results out;"
	@echo "            then execute every notebook into build/ (HTML, PNG figures)"
	@echo "make test   lint, type-check and run every test, notebooks included"
	@echo "make lab    open JupyterLab on notebooks/ (extra options: make lab LAB_ARGS=--no-browser)"
	@echo "make bench  benchmark against the baseline server, then durable vs in-memory ingest"
	@echo "make clean  remove .venv and build/"

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "metrics_lab needs Python 3.11 or newer; run: make PYTHON=python3.11 ...")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[lab,dev]'
	-test -d .git && $(BIN)/nbstripout --install --attributes .gitattributes
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/metrics-lab demo
	$(BIN)/python tools/export_notebooks.py --notebooks notebooks --build build

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck
	$(if $(wildcard notebooks/*.ipynb),$(BIN)/nbstripout --verify $(wildcard notebooks/*.ipynb))
	$(BIN)/pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

# Leading "-": a missed target makes the benchmark exit 1, and the second one should still run.
bench: $(STAMP)
	-$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.durable

clean:
	rm -rf $(VENV) build
