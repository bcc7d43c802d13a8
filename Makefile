# suanli: `make demo` runs the whole thing offline, `make test` runs the suite.
# Every install takes the versions pinned in constraints.txt (refresh on purpose: `make constraints`).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8080
# pytest-xdist workers for make test (0 runs the suite in this process, one test at a time)
TEST_WORKERS ?= 2
CONSTRAINTS := constraints.txt
PIP := $(BIN)/pip install --quiet -c $(CONSTRAINTS)

.PHONY: demo test lint install install-dev constraints clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml $(CONSTRAINTS)
	$(PIP) -e '.[fast,client]'
	touch $@
	@echo "installed; to type suanli and python commands in a shell: source $(VENV)/bin/activate"

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) -e '.[fast,dev]'
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

demo: $(VENV)/.installed
	$(BIN)/suanli demo --port $(PORT)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check suanli config optimizer providers router tests examples benchmarks

test: $(VENV)/.installed-dev lint
	$(BIN)/python -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS)

# Re-resolve every dependency from pyproject.toml in a scratch venv and pin the result: the only
# way constraints.txt changes. Review and commit the diff (and run `make test` on it).
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install --quiet --upgrade pip
	.venv-constraints/bin/pip install --quiet '.[fast,client,dev]'
	{ echo "# Pinned on purpose: what make demo, make test and CI install (pip -c constraints.txt)."; \
	  echo "# Refresh with make constraints (re-resolves pyproject.toml in a scratch venv) and commit the diff."; \
	  .venv-constraints/bin/pip freeze --all --exclude suanli --exclude setuptools --exclude wheel; } > $(CONSTRAINTS)
	rm -rf .venv-constraints build

clean:
	rm -rf $(VENV) *.egg-info
