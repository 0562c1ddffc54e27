# Benchmarks against a real API server: issuance per algorithm, idle and restart at 10k certificates, a
# renewal storm, unrelated objects (noise) and bad input (bench/bench_operator.py), plus the /metrics scrape
# cost (bench/bench_scrape.py) and what each write of a renewal costs kube-apiserver (bench/bench_write_costs.py).
# JSON results in bench/results/<scenario>.json, one summary line per
# scenario on stdout, then the table of bench/compare.py. See docs/benchmarks.md.
# Scale with BENCH_N, BENCH_IDLE_N, BENCH_STORM_N; run some scenarios with BENCH_SCENARIOS="idle-10k ...";
# BENCH_BEFORE=<another checkout with a .venv> runs that tree's operator first in each scenario
# (before -> after ratios from one sitting; about twice as long).

BENCH_SCENARIOS ?=

bench: $(STAMP) controlplane ## benchmarks against a real API server (~45 min on 2 cores; results in bench/results/)
	$(BIN)/python bench/bench_operator.py $(BENCH_SCENARIOS)
	$(BIN)/python bench/bench_scrape.py
	$(BIN)/python bench/bench_write_costs.py
	$(BIN)/python bench/compare.py

bench-quick: $(STAMP) controlplane ## the same benchmarks at small N, to check that they run
	BENCH_N=100 BENCH_IDLE_N=500 BENCH_STORM_N=500 BENCH_SINGLE=5 BENCH_IDLE_WINDOW=5 \
		BENCH_NOISE_CERTS=100 BENCH_NOISE_SECRETS=500 BENCH_NOISE_DEPLOYMENTS=100 \
		$(BIN)/python bench/bench_operator.py $(BENCH_SCENARIOS)

.PHONY: bench bench-quick
