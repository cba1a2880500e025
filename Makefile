# Kagent — every target creates .venv and installs the project on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help demo demo-down test test-unit test-integration dev dev-down crds docs bench lint clean system-deps dashboard

help:
	@echo "make demo      the whole system on a local cluster, offline: agents, a live workflow run"
	@echo "make demo-down stop everything make demo started"
	@echo "make test      run the whole test suite (unit + integration on a real control plane)"
	@echo "make dev       start a local control plane with Kagent (kagent dev up)"
	@echo "make dev-down  stop it"
	@echo "make crds      regenerate charts/kagent/crds from the API types"
	@echo "make docs      regenerate docs/reference/api.md from the API types"
	@echo "make bench     run the benchmarks"
	@echo "make dashboard rebuild the dashboard's front-end into kagent/dashboard/static (npm)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Debian packages the tests need beyond what pip installs (the real Redis server).
system-deps:
	@hack/system-deps.sh

test: $(STAMP) system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

test-integration: $(STAMP) system-deps
	$(BIN)/pytest tests/integration $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/kagent dev demo

demo-down: $(STAMP)
	$(BIN)/kagent dev down

dev: $(STAMP)
	$(BIN)/kagent dev up

dev-down: $(STAMP)
	$(BIN)/kagent dev down

crds: $(STAMP)
	$(BIN)/kagent crds

docs: $(STAMP)
	$(BIN)/kagent docs

bench: $(STAMP) system-deps
	$(BIN)/python -m benchmarks

# The dashboard's front-end is checked in built (pip install ships it); this rebuilds it from
# web/dashboard with the versions package-lock.json pins.
dashboard:
	cd web/dashboard && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
