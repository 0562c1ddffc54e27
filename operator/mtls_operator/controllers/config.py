"""Every knob of the operator in one frozen tree, built from flags whose defaults come from the environment.

``mtls-operator --help`` lists them all, and the chart's ``values.yaml`` sets them (``config:`` maps to the
``MTLS_*`` variables named here). Nothing else reads the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from mtls_operator.policy import backoff
from mtls_operator.policy.budget import IssuanceBudget
from mtls_operator.policy.podcert_routing import NodeRate
from mtls_operator.policy.rollout import Pacing

DEFAULT_METRICS_PORT = 9402
DEFAULT_REVOCATION_PORT = 9403


@dataclass(frozen=True)
class ServerConfig:
    """An HTTP server of the operator (metrics, revocation responder). Port 0 turns it off."""

    port: int
    bind: str = "127.0.0.1"  # the chart sets 0.0.0.0: scraped and queried from outside the pod


@dataclass(frozen=True)
class LeaderElectionConfig:
    enabled: bool = False
    namespace: str = ""  # empty: the pod's namespace, else the kubeconfig's
    name: str = "mtls-operator"
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


@dataclass(frozen=True)
class WatchConfig:
    """kopf's watch and request settings."""

    server_timeout: int = 270
    client_timeout: int = 300
    request_timeout: int = 60


@dataclass(frozen=True)
class SignerSettings:
    """The Pod Certificate signer's own workers (apart from the certificates') and each node's rate."""

    workers: int = 2
    node_rate: NodeRate = field(default_factory=NodeRate)


@dataclass(frozen=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()  # empty: every namespace
    cluster_namespace: str = "mtls-system"  # where MTLSClusterIssuers keep their CA Secrets
    workers: int = 8
    crypto_threads: int = 2
    backoff_base: timedelta = backoff.DEFAULT_BASE
    backoff_cap: timedelta = backoff.DEFAULT_CAP
    issuer_recheck: timedelta = timedelta(minutes=10)
    resync_interval: timedelta = timedelta(minutes=5)
    budget: IssuanceBudget = field(default_factory=IssuanceBudget)
    pacing: Pacing = field(default_factory=Pacing)
    metrics: ServerConfig = field(default_factory=lambda: ServerConfig(DEFAULT_METRICS_PORT))
    revocation: ServerConfig = field(default_factory=lambda: ServerConfig(DEFAULT_REVOCATION_PORT))
    revocation_mirror_interval: timedelta = timedelta(seconds=10)  # a standby's copy of the stored lists
    pod_certificates: SignerSettings = field(default_factory=SignerSettings)
    leader_election: LeaderElectionConfig = field(default_factory=LeaderElectionConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    log_level: str = "INFO"


def _env(env: Mapping[str, str], name: str, default: object) -> str:
    value = env.get(name)
    return value if value not in (None, "") else str(default)


def _seconds(value: str) -> float:
    seconds = float(value)
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return seconds


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The command line; each flag's default is its MTLS_* environment variable, else the built-in one."""
    d = OperatorConfig()
    p = argparse.ArgumentParser(
        prog="mtls-operator",
        description="Run the mtls-operator controller. Every flag defaults to the environment variable "
        "named in its help, then to the value shown.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; globs such as 'team-*' allowed) (MTLS_NAMESPACES: "
        "comma-separated)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace")
    p.add_argument(
        "--cluster-resource-namespace",
        default=_env(env, "MTLS_CLUSTER_RESOURCE_NAMESPACE", env.get("POD_NAMESPACE") or d.cluster_namespace),
        help="namespace of the CA Secrets, trust bundles and revocation lists of MTLSClusterIssuers "
        "(MTLS_CLUSTER_RESOURCE_NAMESPACE; default: the pod's namespace)",
    )

    def add(flag: str, var: str, default: object, kind: Callable[[str], Any] = str, text: str = "") -> None:
        p.add_argument(flag, type=kind, default=kind(_env(env, var, default)), help=f"{text} ({var})")

    add("--workers", "MTLS_WORKERS", d.workers, int, "reconciles running at once")
    add(
        "--crypto-threads",
        "MTLS_CRYPTO_THREADS",
        d.crypto_threads,
        int,
        "threads for key generation and signing",
    )
    add(
        "--backoff-base",
        "MTLS_BACKOFF_BASE",
        d.backoff_base.total_seconds(),
        _seconds,
        "seconds before the first retry of a failed issuance; doubles up to --backoff-cap",
    )
    add(
        "--backoff-cap",
        "MTLS_BACKOFF_CAP",
        d.backoff_cap.total_seconds(),
        _seconds,
        "the longest wait between issuance attempts, in seconds",
    )
    add(
        "--issuer-recheck",
        "MTLS_ISSUER_RECHECK",
        d.issuer_recheck.total_seconds(),
        _seconds,
        "seconds between two looks at an issuer that nothing changed (CA Secrets not watched, expiry)",
    )
    add(
        "--resync-interval",
        "MTLS_RESYNC_INTERVAL",
        d.resync_interval.total_seconds(),
        _seconds,
        "seconds between two comparisons of what the operator holds with a fresh list (0 turns it off)",
    )
    add(
        "--issuance-burst",
        "MTLS_ISSUANCE_BURST",
        d.budget.burst,
        int,
        "issuances one certificate may have in a burst before it is throttled",
    )
    add(
        "--issuance-refill",
        "MTLS_ISSUANCE_REFILL",
        d.budget.max_refill.total_seconds(),
        _seconds,
        "at most this many seconds for one issuance of the budget to come back",
    )
    add(
        "--rollout-max-in-flight",
        "MTLS_ROLLOUT_MAX_IN_FLIGHT",
        d.pacing.max_in_flight,
        int,
        "workload restarts in progress at once",
    )
    add(
        "--rollout-min-interval",
        "MTLS_ROLLOUT_MIN_INTERVAL",
        d.pacing.min_interval.total_seconds(),
        _seconds,
        "seconds between two restarts of one workload",
    )
    add(
        "--rollout-coalesce",
        "MTLS_ROLLOUT_COALESCE",
        d.pacing.coalesce.total_seconds(),
        _seconds,
        "seconds to gather renewals of several certificates into one restart",
    )
    add(
        "--rollout-timeout",
        "MTLS_ROLLOUT_TIMEOUT",
        d.pacing.timeout.total_seconds(),
        _seconds,
        "seconds after which an unfinished restart stops counting as in flight",
    )
    add(
        "--rollout-max-per-hour",
        "MTLS_ROLLOUT_MAX_PER_HOUR",
        d.pacing.max_per_hour,
        int,
        "loop guard: restarts of one workload per hour",
    )
    add("--metrics-port", "MTLS_METRICS_PORT", d.metrics.port, int, "serve /metrics and /healthz (0: off)")
    add(
        "--metrics-bind-address",
        "MTLS_METRICS_BIND_ADDRESS",
        d.metrics.bind,
        str,
        "address the metrics server listens on",
    )
    add(
        "--revocation-port",
        "MTLS_REVOCATION_PORT",
        d.revocation.port,
        int,
        "serve CRLs and OCSP on this port (0: off)",
    )
    add(
        "--revocation-bind-address",
        "MTLS_REVOCATION_BIND",
        d.revocation.bind,
        str,
        "address the revocation responder listens on",
    )
    add(
        "--revocation-mirror-interval",
        "MTLS_REVOCATION_MIRROR_INTERVAL",
        d.revocation_mirror_interval.total_seconds(),
        _seconds,
        "seconds between a standby's reads of the stored revocation lists it answers from",
    )
    add(
        "--pod-certificate-workers",
        "MTLS_POD_CERTIFICATE_WORKERS",
        d.pod_certificates.workers,
        int,
        "PodCertificateRequests answered at once (a queue apart from the certificates')",
    )
    add(
        "--pod-certificate-node-burst",
        "MTLS_POD_CERTIFICATE_NODE_BURST",
        d.pod_certificates.node_rate.burst,
        int,
        "PodCertificateRequests of one node answered at once before its rate applies",
    )
    add(
        "--pod-certificate-node-rate",
        "MTLS_POD_CERTIFICATE_NODE_RATE",
        d.pod_certificates.node_rate.per_second,
        _seconds,
        "PodCertificateRequests of one node answered per second after the burst",
    )
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=_truthy(_env(env, "MTLS_LEADER_ELECT", "false")),
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease writes "
        "(MTLS_LEADER_ELECT)",
    )
    le = d.leader_election
    add(
        "--leader-elect-namespace",
        "POD_NAMESPACE",
        le.namespace,
        str,
        "namespace of the Lease (empty: the pod's namespace, else the kubeconfig's)",
    )
    add("--leader-elect-name", "MTLS_LEADER_ELECT_NAME", le.name, str, "name of the Lease")
    add(
        "--leader-elect-lease-duration",
        "MTLS_LEADER_ELECT_LEASE_DURATION",
        le.lease_duration,
        _seconds,
        "seconds a Lease is valid without renewal",
    )
    add(
        "--leader-elect-renew-deadline",
        "MTLS_LEADER_ELECT_RENEW_DEADLINE",
        le.renew_deadline,
        _seconds,
        "seconds the leader keeps trying to renew before it gives up",
    )
    add(
        "--leader-elect-retry-period",
        "MTLS_LEADER_ELECT_RETRY_PERIOD",
        le.retry_period,
        _seconds,
        "seconds between two attempts to acquire or renew",
    )
    w = d.watch
    add(
        "--watch-server-timeout",
        "MTLS_WATCH_SERVER_TIMEOUT",
        w.server_timeout,
        int,
        "seconds the API server keeps one watch request open",
    )
    add(
        "--watch-client-timeout",
        "MTLS_WATCH_CLIENT_TIMEOUT",
        w.client_timeout,
        int,
        "seconds the operator waits on one watch request",
    )
    add("--request-timeout", "MTLS_REQUEST_TIMEOUT", w.request_timeout, int, "seconds for one API request")
    add("--log-level", "MTLS_LOG_LEVEL", d.log_level, str, "DEBUG, INFO, WARNING or ERROR")
    return p


def config_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> OperatorConfig:
    namespaces: Sequence[str] = args.namespace or [
        n.strip() for n in env.get("MTLS_NAMESPACES", "").split(",") if n.strip()
    ]
    if args.all_namespaces:
        namespaces = ()
    return OperatorConfig(
        namespaces=tuple(namespaces),
        cluster_namespace=str(args.cluster_resource_namespace),
        workers=max(1, args.workers),
        crypto_threads=max(1, args.crypto_threads),
        backoff_base=timedelta(seconds=args.backoff_base),
        backoff_cap=timedelta(seconds=args.backoff_cap),
        issuer_recheck=timedelta(seconds=max(1.0, args.issuer_recheck)),
        resync_interval=timedelta(seconds=args.resync_interval),
        budget=IssuanceBudget(
            burst=max(1, args.issuance_burst), max_refill=timedelta(seconds=args.issuance_refill)
        ),
        pacing=Pacing(
            max_in_flight=max(1, args.rollout_max_in_flight),
            min_interval=timedelta(seconds=args.rollout_min_interval),
            coalesce=timedelta(seconds=args.rollout_coalesce),
            max_per_hour=max(1, args.rollout_max_per_hour),
            timeout=timedelta(seconds=args.rollout_timeout),
        ),
        metrics=ServerConfig(args.metrics_port, args.metrics_bind_address),
        revocation=ServerConfig(args.revocation_port, args.revocation_bind_address),
        revocation_mirror_interval=timedelta(seconds=max(1.0, args.revocation_mirror_interval)),
        pod_certificates=SignerSettings(
            workers=max(1, args.pod_certificate_workers),
            node_rate=NodeRate(
                burst=max(1, args.pod_certificate_node_burst),
                per_second=max(0.1, args.pod_certificate_node_rate),
            ),
        ),
        leader_election=LeaderElectionConfig(
            enabled=args.leader_elect,
            namespace=args.leader_elect_namespace,
            name=args.leader_elect_name,
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        ),
        watch=WatchConfig(args.watch_server_timeout, args.watch_client_timeout, args.request_timeout),
        log_level=str(args.log_level).upper(),
    )


def parse_config(argv: Sequence[str] | None, env: Mapping[str, str]) -> OperatorConfig:
    return config_from_args(build_parser(env).parse_args(argv), env)
