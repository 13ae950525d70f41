# consent-pipeline: `make run` for the live demo, `make test` for the test suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)
KAFKA := deploy/local/kafka.sh
PYTEST_ARGS ?=
DURATION ?=
CHAOS_ARGS ?=
BENCH_ARGS ?=
# The local cluster's size: `make kafka-up NODES=3` runs three replicated brokers.
NODES ?= 1
BENCH_STAMP := $(VENV)/.bench-$(shell cksum < pyproject.toml | cut -d' ' -f1)
# The Quix Streams contender's own virtualenv: quixstreams pins pydantic below the project's.
QUIX_VENV := .local/venv-quix
QUIX_STAMP := $(QUIX_VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

.PHONY: help setup tools browser screenshots deploy-check chaos chaos-cluster chaos-faust bench bench-quick kafka-fetch kafka-up kafka-down kafka-status topics worker run test unit \
	integration contracts lint fmt typecheck check clean

help: ## Show the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Python 3.11+ is required" if sys.version_info < (3, 11) else 0)'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@rm -f $(VENV)/.bench-* && touch $@

$(QUIX_STAMP): pyproject.toml
	@test -x $(QUIX_VENV)/bin/python || $(PYTHON) -m venv $(QUIX_VENV)
	$(QUIX_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(QUIX_VENV)/bin/python -m pip install --quiet -e '.[quix]'
	@rm -f $(QUIX_VENV)/.installed-* && touch $@

setup: $(STAMP) kafka-fetch ## Create the virtualenv, install the package, fetch Kafka

kafka-fetch: ## Resolve Apache Kafka's jars from Maven Central into .local/kafka
	@$(KAFKA) fetch

kafka-up: ## Start the local Kafka broker (KRaft, 127.0.0.1:9092; NODES=3: three replicated); idempotent
	@if [ -n "$$KAFKA_BOOTSTRAP_SERVERS" ]; then \
		echo "using the Kafka cluster at $$KAFKA_BOOTSTRAP_SERVERS (KAFKA_BOOTSTRAP_SERVERS); no local broker started"; \
	else KAFKA_NODES=$(NODES) $(KAFKA) up; fi

kafka-down: ## Stop the local Kafka broker(s); data stays in .local/kafka
	@KAFKA_NODES=$(NODES) $(KAFKA) down

kafka-status: ## Is the local broker (each of NODES) running?
	@KAFKA_NODES=$(NODES) $(KAFKA) status

topics: $(STAMP) kafka-up ## Create the pipeline's topics on the local broker
	$(BIN)/consent-pipeline topics create

# Development keys, made once and shared with `make run`; a key set in the environment wins.
.local/dev-hmac-key .local/dev-trust-key: | $(STAMP)
	@mkdir -p .local && umask 077 && $(BIN)/python -c 'import secrets; print(secrets.token_hex(32))' > $@

worker: topics .local/dev-hmac-key .local/dev-trust-key ## Run one worker in the foreground (development keys from .local/ unless set)
	PIPELINE_HMAC_KEY="$${PIPELINE_HMAC_KEY:-$$(cat .local/dev-hmac-key)}" \
	PIPELINE_TRUST_KEY="$${PIPELINE_TRUST_KEY:-$$(cat .local/dev-trust-key)}" \
	$(BIN)/consent-pipeline worker

run: topics ## The live demo: broker, topics, worker, collector, producer; Ctrl-C stops
	$(BIN)/consent-pipeline demo $(if $(DURATION),--duration $(DURATION))

tools: $(STAMP) ## Install the tools that check deploy/ (promtool, compose-config, kustomize, schemas)
	deploy/tools/install.sh

browser: ## Install headless Chromium and its chromedriver (Debian packages) for the page test
	deploy/tools/install-browser.sh

deploy-check: tools ## Check deploy/: promtool, compose, Kubernetes schemas, dashboards
	$(BIN)/pytest tests/deploy $(PYTEST_ARGS)

test: setup tools browser ## All tests: unit, deploy checks, integration against a real broker (:19092)
	$(BIN)/pytest $(PYTEST_ARGS)

unit: $(STAMP) ## Unit tests only (no broker)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

integration: setup tools browser ## Integration tests only
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

screenshots: setup browser ## Take the settings page's screenshots again, into docs/
	SCREENSHOT_DIR=docs $(BIN)/pytest tests/integration/test_settings_page.py $(PYTEST_ARGS)

bench: $(BENCH_STAMP) $(QUIX_STAMP) kafka-fetch kafka-up ## Benchmarks side by side (<20 min): writes benchmarks/results/
	BENCH_QUIX_PYTHON=$(QUIX_VENV)/bin/python $(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP) $(QUIX_STAMP) kafka-fetch kafka-up ## A ~5 min benchmark smoke run into .local/bench/
	BENCH_QUIX_PYTHON=$(QUIX_VENV)/bin/python $(BIN)/python -m benchmarks.run --quick $(BENCH_ARGS)

chaos: setup ## Fault-injection suite (~30-45 min): writes deploy/chaos/report.{md,json}
	$(BIN)/python -m tests.chaos $(CHAOS_ARGS)

chaos-cluster: setup ## Fault suite on three local brokers, replicated (~25 min): deploy/chaos/cluster/
	$(BIN)/python -m tests.chaos --cluster $(CHAOS_ARGS)

chaos-faust: setup ## The fault suite's invariants over the faust_batched contender (~10 min): deploy/chaos/faust_batched/
	$(BIN)/python -m tests.chaos --contender faust_batched $(CHAOS_ARGS)

contracts: $(STAMP) ## Regenerate the published contracts (schemas/json, schemas/asyncapi.yaml, docs/policy.md)
	$(BIN)/consent-pipeline contracts

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

fmt: $(STAMP) ## Format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy (strict)
	$(BIN)/mypy

check: lint typecheck test ## Everything CI cares about

clean: kafka-down ## Remove the virtualenv, local broker data and caches
	rm -rf $(VENV) .local .pytest_cache .mypy_cache .ruff_cache
