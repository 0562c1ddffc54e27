# mtls-operator: `make demo` and `make test` are the two commands a newcomer needs (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export MTLS_CACHE ?= $(HOME)/.cache/mtls-operator
export PATH := $(CURDIR)/$(BIN):$(PATH)
STAMP := $(VENV)/.installed
# Extra prerequisites of `make test` (system packages, toolchains): each mk/<area>.mk appends to it.
TEST_DEPS :=
# Each area adds its own targets in mk/<area>.mk (demo, bench, chart, interop, ...), included here so
# that their additions to TEST_DEPS are seen by the `test` rule below.
-include mk/*.mk

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(STAMP) ## create .venv with the project and its test tools

controlplane: ## build kube-apiserver, kube-controller-manager, kubectl, etcd and helm (cached)
	bash e2e/controlplane/build.sh

lint: $(STAMP) ## ruff, mypy --strict and the import contracts
	$(BIN)/ruff check operator tests bench
	$(BIN)/ruff format --check operator tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: $(STAMP) ## unit tests (no cluster)
	$(BIN)/pytest tests/unit -q

integration: $(STAMP) controlplane ## integration tests against the real control plane
	$(BIN)/pytest tests/integration -q

test: $(STAMP) controlplane $(TEST_DEPS) lint ## everything CI runs: lint, unit and integration tests
	$(BIN)/pytest tests -q

cluster-up: $(STAMP) controlplane node ## start a local control plane and a node; kubeconfig in .local/kubeconfig
	$(BIN)/python -m mtls_operator.testing.controlplane up --dir .local --node

cluster-down: $(STAMP) ## stop the local control plane and node, and remove their processes
	$(BIN)/python -m mtls_operator.testing.controlplane down --dir .local

.PHONY: help venv controlplane lint unit integration test cluster-up cluster-down
