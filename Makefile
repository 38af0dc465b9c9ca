# The README's two commands: `make demo` and `make test`. Everything else is a step of those.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STACK := compose/native/stack

.PHONY: venv lint test unit-test test-secure test-cluster demo bench sanitize stack-up stack-down stack-status clean

venv: $(VENV)/.installed

# setup.py and the C sources too: a changed extension must be rebuilt (pip install -e compiles it).
$(VENV)/.installed: setup.cfg pyproject.toml setup.py $(wildcard cdc_consumer/*.c cdc_consumer/*.h)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

# The pipeline end to end for DEMO_SECONDS (default 60), then a summary; leaves the stack running.
demo: venv
	$(BIN)/python compose/demo.py

# Every benchmark, figures to bench/results.json (starts the native stack if needed).
bench: venv
	$(STACK) with -- $(BIN)/python bench/run_all.py

# Unit tests only: no services needed.
unit-test: venv
	$(BIN)/pytest -q tests/unit

# ruff over the tree, mypy over cdc_consumer, ingest, connectors and bench ([mypy] in setup.cfg).
lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

# Lint first; then starts the native stack unless it is already running, runs every test, stops what it
# started; then the cluster tests, after the main stack's tests so the two stacks never compete for the cores.
# --durations: the slowest tests are in every CI log, to keep `make test` well under its 30 minutes.
test: venv lint
	$(STACK) with -- $(BIN)/pytest -q --durations=15 tests --ignore=tests/cluster
	$(MAKE) test-cluster

# Only the cluster tests (issue 13): they start a 3 Cassandra + 3 Kafka cluster (`stack up --cassandra-nodes 3
# --kafka-brokers 3`) in a state dir and on ports of their own, kill nodes under load, and stop it afterwards.
test-cluster: venv
	$(BIN)/pytest -q -s --durations=5 tests/cluster

# Only the secured-deployment tests: they start `stack up --secure` in a state dir and on ports of their
# own (beside the open stack) and stop it afterwards; `make test` runs them too.
test-secure: venv
	$(BIN)/pytest -q tests/secure

# The C extensions built with AddressSanitizer + UBSan (into build/sanitize/, the .venv build untouched), and
# the decoder, mapping and fuzz tests run against them (tests/sanitize/run; no services needed).
sanitize: venv
	tests/sanitize/run

stack-up:
	$(STACK) up

stack-down:
	$(STACK) down

stack-status:
	$(STACK) status

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .hypothesis build
