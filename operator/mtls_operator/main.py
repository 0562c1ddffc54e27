"""`mtls-operator`: run the controller."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

import kopf

from mtls_operator import __version__
from mtls_operator.controllers.revocation_http import responder_address
from mtls_operator.controllers.revocation_mirror import RevocationMirror, mirror_interval
from mtls_operator.controllers.runtime import Settings
from mtls_operator.k8s.api import ApiClient, Credentials, credentials_from_kopf
from mtls_operator.k8s.lease import LeaderElector, LeaseConfig, default_identity
from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import (
    DEFAULT_BIND,
    DEFAULT_PORT,
    MetricsServer,
    raise_open_files_limit,
)

logger = logging.getLogger("mtls_operator")
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="mtls-operator", description="Run the mtls-operator controller.")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch this namespace (repeatable; globs such as 'team-*' allowed)",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    p.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("MTLS_WORKERS", "8")),
        help="reconciles running at once (default 8)",
    )
    p.add_argument(
        "--backoff-base",
        type=float,
        default=float(os.environ.get("MTLS_BACKOFF_BASE", "30")),
        help="seconds before the first retry of a failed issuance; doubles up to --backoff-cap",
    )
    p.add_argument(
        "--backoff-cap",
        type=float,
        default=float(os.environ.get("MTLS_BACKOFF_CAP", "3600")),
        help="the longest wait between issuance attempts, in seconds (default 3600)",
    )
    p.add_argument("--log-level", default=os.environ.get("MTLS_LOG_LEVEL", "INFO"))
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(os.environ.get("MTLS_METRICS_PORT", str(DEFAULT_PORT))),
        help=f"serve /metrics and /healthz on this port (default {DEFAULT_PORT}; 0 disables)",
    )
    p.add_argument(
        "--metrics-bind-address",
        default=os.environ.get("MTLS_METRICS_BIND_ADDRESS", DEFAULT_BIND),
        help=f"address the metrics server listens on (default {DEFAULT_BIND}; the Helm chart sets 0.0.0.0 "
        "so that Prometheus and the kubelet reach it)",
    )
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("MTLS_LEADER_ELECT", "").lower() in {"1", "true", "yes"},
        help="run as one of several replicas: only the holder of a coordination.k8s.io Lease writes",
    )
    p.add_argument(
        "--leader-elect-namespace",
        default=os.environ.get("POD_NAMESPACE", ""),
        help="namespace of the Lease (default: the pod's namespace, else the kubeconfig's)",
    )
    p.add_argument("--leader-elect-name", default="mtls-operator", help="name of the Lease")
    p.add_argument("--leader-elect-lease-duration", type=float, default=15.0, help="seconds (default 15)")
    p.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, help="seconds (default 10)")
    p.add_argument("--leader-elect-retry-period", type=float, default=2.0, help="seconds (default 2)")
    p.add_argument("--version", action="version", version=f"mtls-operator {__version__}")
    return p.parse_args(argv)


def build_info() -> dict[str, str]:
    """Versions for mtls_build_info: the operator, kopf, cryptography and the OpenSSL it links."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "unknown"

    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        openssl = str(backend.openssl_version_text())
    except Exception:  # build info must never stop the operator
        openssl = "unknown"
    return {
        "version": __version__,
        "kopf": version("kopf"),
        "cryptography": version("cryptography"),
        "openssl": openssl,
        "python": sys.version.split()[0],
    }


def needs_cluster_scan(namespaces: list[str] | None) -> bool:
    """Whether kopf must list/watch Namespaces and CRDs cluster-wide: not for a list of exact namespaces.

    With exact names (no globs) kopf's scanning is turned off, so a namespaced install needs no
    cluster-scoped RBAC at all (see charts/mtls-operator/templates/rbac.yaml).
    """
    if not namespaces:
        return True
    return any(ch in ns for ns in namespaces for ch in "*?[!")


def _login() -> Credentials:
    """The operator's credentials, the way kopf finds them (in-cluster service account, else KUBECONFIG)."""
    settings = kopf.OperatorSettings()
    info = kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)
    if info is None:
        raise SystemExit("No credentials: set KUBECONFIG or run in-cluster with a service account.")
    return credentials_from_kopf(info)


def _lease_namespace(args: argparse.Namespace, creds: Credentials) -> str:
    if args.leader_elect_namespace:
        return str(args.leader_elect_namespace)
    with contextlib.suppress(OSError):
        return SA_NAMESPACE_FILE.read_text().strip()
    return creds.default_namespace or "default"


async def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start the metrics server, wait for leadership if asked to (serving CRLs and OCSP read-only from the
    stored lists meanwhile), then run kopf until it stops."""
    soft, _ = raise_open_files_limit()
    logger.debug("Open files limit: %d.", soft)
    metrics = Metrics(build=build_info())
    server: MetricsServer | None = None
    if args.metrics_port:
        server = MetricsServer(metrics, host=args.metrics_bind_address, port=args.metrics_port)
        try:
            await server.start()
        except OSError as exc:
            logger.error(
                "Cannot serve metrics on port %d: %s; running without /metrics.", args.metrics_port, exc
            )
            server = None
    stop = asyncio.Event()
    elector: LeaderElector | None = None
    lease_api: ApiClient | None = None
    mirror_api: ApiClient | None = None
    mirror: RevocationMirror | None = None
    holder: asyncio.Task[None] | None = None
    loop = asyncio.get_running_loop()
    try:
        if args.leader_elect:
            creds = _login()
            lease_api = ApiClient(creds, timeout=10.0)
            config = LeaseConfig(
                namespace=_lease_namespace(args, creds),
                name=args.leader_elect_name,
                identity=default_identity(),
                lease_duration=args.leader_elect_lease_duration,
                renew_deadline=args.leader_elect_renew_deadline,
                retry_period=args.leader_elect_retry_period,
            )
            elector = LeaderElector(lease_api, config)
            metrics.set_leader(False)
            address = responder_address()
            if address is not None:
                # A standby answers CRL and OCSP too (the Service routes to every replica), read-only from
                # the stored lists, on its own client so that the Lease never waits behind it.
                mirror_api = ApiClient(creds, timeout=10.0, concurrency=4)
                mirror = RevocationMirror(
                    mirror_api,
                    namespaces=args.namespace,
                    cluster_wide=needs_cluster_scan(args.namespace or None),
                    interval=mirror_interval(),
                )
                await mirror.start(*address)
            logger.info(
                "Leader election on: identity %s, lease %s/%s.",
                elector.identity,
                config.namespace,
                config.name,
            )
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            acquiring = asyncio.create_task(elector.acquire())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if mirror is not None:  # the leader's own store takes the port over
                await mirror.stop()
                mirror = None
            if not acquiring.done():
                acquiring.cancel()
                return 0
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

            def lost() -> None:
                # Another replica may be writing within seconds: stop at once, without cleanup
                # handlers that could still write. Kubernetes restarts the container as a standby.
                logger.critical("Leadership lost: exiting so that only the new leader writes.")
                logging.shutdown()
                os._exit(3)

            holder = asyncio.create_task(elector.hold(lost))
        metrics.set_leader(True)
        namespaces = args.namespace or None
        kopf_settings = kopf.OperatorSettings()
        # Exact namespaces need no cluster-wide listing of Namespaces and CRDs (least RBAC).
        kopf_settings.scanning.disabled = not needs_cluster_scan(namespaces)
        await kopf.operator(
            standalone=True,
            clusterwide=namespaces is None,
            namespaces=namespaces or (),
            memo=kopf.Memo(settings=settings, metrics=metrics),
            settings=kopf_settings,
            stop_flag=stop,
        )
        return 0
    finally:
        if mirror is not None:
            await mirror.stop()
        if mirror_api is not None:
            await mirror_api.close()
        if holder is not None:
            holder.cancel()
        if elector is not None:
            await elector.release()
        if lease_api is not None:
            await lease_api.close()
        if server is not None:
            await server.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handled event at INFO: at 10k objects that drowns what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    import mtls_operator.controllers.handlers  # noqa: F401  (registers the kopf handlers)

    settings = Settings(
        workers=args.workers,
        backoff_base=timedelta(seconds=args.backoff_base),
        backoff_cap=timedelta(seconds=args.backoff_cap),
    )
    return asyncio.run(run(args, settings))


if __name__ == "__main__":
    sys.exit(main())
