"""The operator against a real API server: issuance per algorithm, idle and restart at scale, a renewal
storm, unrelated objects (noise) and bad input.

    python bench/bench_operator.py [scenario ...]     # default: all; see --help for the names
    BENCH_BEFORE=/work/wt/scale-before python bench/bench_operator.py   # before -> after, one sitting

Each scenario (idle-10k and restart-10k together) gets a fresh throwaway control plane (etcd,
kube-apiserver with an audit log of writes and lists, kube-controller-manager) and its own operator
process (bench/probe.py, i.e. `python -m mtls_operator` with a measuring probe inside), so its `Queue idle:
... writes=W` figures, its VmHWM and the API server's CPU and request counters are its own. With
BENCH_BEFORE the "before" operator (another checkout, its own venv and CRDs) runs first on its own control
plane, then this tree's. Objects are created with the `kubernetes` client from a few threads; what the
operator did is observed through watches, the API server's /metrics and its audit log (by user agent),
never by polling objects. Each scenario writes bench/results/<scenario>[.before].json and prints one
summary line on stdout (progress goes to stderr); bench/compare.py prints the before -> after table. The
aims are reported, not asserted. See docs/benchmarks.md.

Scale with BENCH_N (issuance; RSA uses a fifth), BENCH_IDLE_N (idle and restart), BENCH_STORM_N,
BENCH_NOISE_CERTS, BENCH_NOISE_SECRETS, BENCH_NOISE_DEPLOYMENTS; BENCH_CLIENTS sets the creating threads
(default 8), BENCH_SINGLE the single-certificate samples (default 20), BENCH_IDLE_WINDOW the idle window
in seconds (default 30), BENCH_RESYNC_AFTER the restarted operator's resync interval (default 60 s).
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from control_plane import cluster
from reporting import say, variants_from_env
from scenario_bad_input import bad_input
from scenario_idle import idle_and_restart
from scenario_issuance import algorithms, issuance, variants
from scenario_noise import NOISE_NAMESPACE, noise
from scenario_run import Run
from scenario_storm import renewal_storm


def main(argv: list[str] | None = None) -> int:
    names = [a.scenario for a in algorithms()] + [
        "idle-10k",
        "restart-10k",
        "renewal-storm",
        "noise",
        "bad-input",
    ]
    optional = [a.scenario for a in variants()]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "scenarios",
        nargs="*",
        metavar="scenario",
        help=f"default: all of {', '.join(names)}; also {', '.join(optional)}",
    )
    args = p.parse_args(argv)
    wanted = set(args.scenarios or names)
    unknown = sorted(wanted - set(names) - set(optional))
    if unknown:
        p.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(names + optional)}")
    logs = Path(tempfile.mkdtemp(prefix="mtls-bench-logs-"))
    started = time.monotonic()
    groups: list[tuple[str, Callable[[Run], None], Sequence[str]]] = []
    for alg in algorithms() + variants():
        if alg.scenario in wanted:
            groups.append((alg.scenario, functools.partial(issuance, alg=alg), ()))
    if wanted & {"idle-10k", "restart-10k"}:
        groups.append(("idle-10k", functools.partial(idle_and_restart, wanted=wanted), ()))
    if "renewal-storm" in wanted:
        groups.append(("renewal-storm", renewal_storm, ()))
    if "noise" in wanted:
        groups.append(("noise", noise, (NOISE_NAMESPACE,)))
    if "bad-input" in wanted:
        groups.append(("bad-input", bad_input, ()))
    failed = []
    for name, scenario, quiet in groups:
        # Each variant on its own fresh control plane, one after the other: the same sitting, the same
        # empty API server, its counters and CPU its own.
        for variant in variants_from_env():
            say(f"{name} [{variant.name}]")
            try:
                with cluster(variant.crd_dir, quiet) as c:
                    scenario(Run(c, logs, variant))
            except Exception as exc:  # one failed scenario must not lose the others' figures
                failed.append(f"{name} [{variant.name}]")
                say(f"{name} [{variant.name}] FAILED: {type(exc).__name__}: {exc}")
    say(f"done in {time.monotonic() - started:.0f}s; operator logs in {logs}")
    if failed:
        say(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
