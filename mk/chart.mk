# Packaging and observability (issue #5): the Helm chart, plain manifests rendered from it, the alert
# rules' promtool tests, and the scrape benchmark. `make test` installs Prometheus (promtool and the
# server, for tests/alerts and tests/integration/test_prometheus*.py) through TEST_DEPS.

CHART := charts/mtls-operator
# The chart's CRDs: crds-src is a symlink to ../../crds (helm follows it, and `helm package` copies the
# files), so crds/ stays the one source and the chart cannot drift from it.
CHART_CRDS := $(CHART)/crds-src
MANIFESTS := deploy/mtls-operator.yaml
MANIFESTS_NAMESPACE := mtls-system
# helm comes with the control-plane binaries (`make controlplane`); HELM=... overrides.
HELM ?= $(shell $(BIN)/python -c 'from mtls_operator.testing.controlplane import find_binaries as f; print(f().helm or "helm")' 2>/dev/null || echo helm)
# The one way the manifests are rendered: `make manifests` writes it, `make manifests-check` and
# tests/unit/test_chart.py compare against it. Without CRDs: those are applied from crds/ itself, so a
# CRD change never makes deploy/ stale.
HELM_TEMPLATE_MANIFESTS = $(HELM) template mtls-operator $(CHART) --namespace $(MANIFESTS_NAMESPACE) --set crds.enabled=false
MANIFESTS_HEADER = echo "\# Rendered from charts/mtls-operator by \`make manifests\` (namespace $(MANIFESTS_NAMESPACE)); do not edit."; \
	echo "\# kubectl create namespace $(MANIFESTS_NAMESPACE) && kubectl apply --server-side -f crds/ -f $(MANIFESTS)"

prometheus-deps: ## install promtool and prometheus (Debian's prometheus package) for the alert and scrape tests
	@command -v promtool >/dev/null && command -v prometheus >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; }
	@promtool --version | head -1

TEST_DEPS += prometheus-deps

chart-crds-check: ## fail unless the chart's CRDs are crds/ itself (the crds-src symlink)
	@test "$$(readlink $(CHART_CRDS))" = "../../crds" && echo "chart CRDs are crds/ (symlink)"

chart-lint: $(STAMP) ## helm lint (strict) the chart, with every optional part on
	$(HELM) lint --strict $(CHART)
	$(HELM) lint --strict $(CHART) --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
	  --set dashboard.enabled=true --set scope.namespaces='{team-a,team-b}'

manifests: $(STAMP) ## render deploy/mtls-operator.yaml from the chart (default values, CRDs from crds/)
	@{ $(MANIFESTS_HEADER); $(HELM_TEMPLATE_MANIFESTS); } > $(MANIFESTS)
	@echo "wrote $(MANIFESTS)"

manifests-check: $(STAMP) chart-crds-check ## fail if deploy/ is not what the chart renders
	@{ $(MANIFESTS_HEADER); $(HELM_TEMPLATE_MANIFESTS); } | diff -u $(MANIFESTS) - && echo "$(MANIFESTS) matches the chart"

alerts-test: prometheus-deps ## promtool: check the alert rules and run their unit tests
	promtool check rules $(CHART)/files/alerts.yaml
	promtool test rules tests/alerts/*.yaml

bench-scrape: $(STAMP) ## time one /metrics exposition at 10k certificates (bench/results/scrape.json)
	$(BIN)/python bench/bench_scrape.py

.PHONY: prometheus-deps chart-crds-check chart-lint manifests manifests-check alerts-test bench-scrape
