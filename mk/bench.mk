# Benchmarks against a real API server: issuance per algorithm, idle at 10k certificates, a renewal storm
# (bench/bench_operator.py), plus the /metrics scrape cost (bench/bench_scrape.py). JSON results in
# bench/results/<scenario>.json, one summary line per scenario on stdout. See docs/benchmarks.md.
# Scale with BENCH_N, BENCH_IDLE_N, BENCH_STORM_N; run some scenarios with BENCH_SCENARIOS="idle-10k ...".

BENCH_SCENARIOS ?=

bench: $(STAMP) controlplane ## benchmarks against a real API server (~20 min; results in bench/results/)
	$(BIN)/python bench/bench_operator.py $(BENCH_SCENARIOS)
	$(BIN)/python bench/bench_scrape.py

bench-quick: $(STAMP) controlplane ## the same benchmarks at small N, to check that they run (~4 min)
	BENCH_N=100 BENCH_IDLE_N=500 BENCH_STORM_N=500 BENCH_SINGLE=5 BENCH_IDLE_WINDOW=5 \
		$(BIN)/python bench/bench_operator.py $(BENCH_SCENARIOS)

.PHONY: bench bench-quick
