# Stillhouse. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_ARGS ?=
# make test-fast runs its tests in this many pytest-xdist workers (0: none, in this process).
# Each worker has its own database, data folder and broker key prefix: tests/conftest.py names
# them after its process. Not --dist loadfile: it keys tests by node id, and schemathesis's 29
# API operations share one (tests/security/test_schemathesis.py), so it would run only one.
TEST_WORKERS ?= 2

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-15s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# The service (this folder) needs the client (client/): pip installs both at once.
$(STAMP_RUN): pyproject.toml client/pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e ./client -e '.[api,worker]'
	touch $@

$(STAMP_DEV): pyproject.toml client/pyproject.toml constraints.txt | $(PY)
	$(PIP) install -q -c constraints.txt -e ./client -e '.[dev]'
	touch $@ $(STAMP_RUN)

install: $(STAMP_RUN) ## Create the virtual environment and install the service and the client

install-client: | $(PY) ## Install only the client, client/ (SDK and CLI: no database, broker or torch)
	$(PIP) install -q -e ./client

run: $(STAMP_RUN) ## Serve the API and a worker on the embedded default (SQLite, no servers)
	@bash .ci/ensure-tools.sh sandbox
	$(VENV)/bin/stillhouse run

services: ## Start local Postgres and Redis when installed but not running
	@bash .ci/ensure-services.sh

tools: ## Install the command-line tools the tests drive (Chromium, wrk, curl, bwrap) when missing
	@bash .ci/ensure-chromium.sh
	@bash .ci/ensure-tools.sh

test: $(STAMP_DEV) services tools ## Run every test against real Postgres and Redis (and SQLite)
	STILLHOUSE_TEST_DATABASE_URL=$(TEST_DATABASE_URL) STILLHOUSE_TEST_REDIS_URL=$(TEST_REDIS_URL) \
		$(PY) -m pytest -q -p no:cacheprovider \
		$(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS)) $(PYTEST_ARGS)

test-fast: $(STAMP_DEV) services tools ## Unit and API tests only (no benchmark smoke or quality runs)
	STILLHOUSE_TEST_DATABASE_URL=$(TEST_DATABASE_URL) STILLHOUSE_TEST_REDIS_URL=$(TEST_REDIS_URL) \
		$(PY) -m pytest -q -p no:cacheprovider -m "not slow" \
		$(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS)) $(PYTEST_ARGS)

lint: $(STAMP_DEV) ## ruff and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

docs: $(STAMP_DEV) ## Build the docs site into site/ (offline, --strict: a broken link fails)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

bench: $(STAMP_DEV) ## Run the benchmarks (prints ratios against their anchors)
	$(PY) -m bench.run_all

clean: ## Remove the virtual environment and local data
	rm -rf $(VENV) var site

.PHONY: help install install-client run services tools test test-fast lint docs bench clean
