# Two commands for a newcomer: `make demo` (the main job) and `make test` (everything checked).
# Both create .venv on first use and reinstall the project whenever pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
ifeq ($(OS),Windows_NT)
BIN := $(VENV)/Scripts
else
BIN := $(VENV)/bin
endif
# Two levels, each with its stamp: what a learner needs (make demo, make lab: the notebooks,
# PostgreSQL's driver for chapter 07), and on top of it the test and lint tools (make test).
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
LEARNER_EXTRAS := lab,postgres

.PHONY: help venv demo test lint typecheck lab edit-notebooks strip bench clean

help:
	@echo "make demo   run the main job: a server, synthetic metrics in, results out;"
	@echo "            then execute every notebook into build/ (HTML, PNG figures)"
	@echo "make test   lint, type-check and run every test, notebooks included"
	@echo "make lab    open JupyterLab on your own copies of the notebooks, in my-notebooks/"
	@echo "            (made on first use, never replaced; extra options: LAB_ARGS=--no-browser)"
	@echo "make edit-notebooks  instructors: JupyterLab on notebooks/ itself, saving them stripped"
	@echo "make strip  remove outputs from notebooks saved by another Jupyter"
	@echo "make bench  benchmark against the baseline server, then durable vs in-memory ingest"
	@echo "make clean  remove .venv and build/"

venv: $(DEV_STAMP)

# pip 25.1 is the first to install dependency groups (--group dev below).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "metrics_lab needs Python 3.11 or newer; run: make PYTHON=python3.11 ...")'
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install --quiet -e '.[$(LEARNER_EXTRAS)]'
	-git rev-parse --git-dir >/dev/null 2>&1 && sh tools/nbstripout.sh --install
	@touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet --group dev
	@touch $(DEV_STAMP)

demo: $(STAMP)
	$(BIN)/metrics-lab demo
	$(BIN)/python tools/export_notebooks.py --notebooks notebooks --build build

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

# Browser tests (tests/test_browser.py) run too when Chromium is installed, and skip otherwise.
test: lint typecheck
	@sh tools/nbstripout.sh --verify notebooks/*.ipynb
	$(BIN)/pytest

# The learner's copies (git ignores my-notebooks/) keep their outputs and exercises through
# save, reopen and git pull; tools/learner_copies.py adds new notebooks, never replaces one.
lab: $(STAMP)
	$(BIN)/python tools/learner_copies.py --source notebooks --target my-notebooks
	$(BIN)/jupyter lab my-notebooks/ $(LAB_ARGS)

# tools/jupyter/ makes JupyterLab save notebooks stripped, so editing them leaves git clean.
edit-notebooks: $(STAMP)
	JUPYTER_CONFIG_PATH="$(CURDIR)/tools/jupyter" $(BIN)/jupyter lab notebooks/ $(LAB_ARGS)

strip: $(STAMP)
	sh tools/nbstripout.sh --strip notebooks/*.ipynb

# Leading "-": a missed target makes the benchmark exit 1, and the second one should still run.
bench: $(STAMP)
	-$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.durable

# git keeps working without .venv: the notebook filter then passes notebooks through.
clean:
	rm -rf $(VENV) build
