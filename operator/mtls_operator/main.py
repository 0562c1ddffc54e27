"""`mtls-operator`: run the controller."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import logging
import os
import signal
import sys
from pathlib import Path

import kopf
from kopf._core.engines.peering import Identity  # kopf exports no public name for it

from mtls_operator import __version__
from mtls_operator.controllers.config import OperatorConfig, parse_config
from mtls_operator.controllers.handlers import WatchOnlyMemories, build_registry
from mtls_operator.controllers.revocation_mirror import RevocationMirror
from mtls_operator.k8s.api import ApiClient, Credentials, credentials_from_kopf
from mtls_operator.k8s.lease import LeaderElector, LeaseConfig, default_identity
from mtls_operator.k8s.login import login
from mtls_operator.observability.metrics import Metrics
from mtls_operator.observability.server import MetricsServer, raise_open_files_limit

logger = logging.getLogger("mtls_operator")
SA_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def parse_args(argv: list[str] | None = None) -> OperatorConfig:
    """The operator's configuration from the command line, whose defaults come from the environment."""
    return parse_config(argv, os.environ)


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
    info = login(settings=kopf.OperatorSettings())
    if info is None:
        raise SystemExit("No credentials: set KUBECONFIG or run in-cluster with a service account.")
    return credentials_from_kopf(info)


def _lease_namespace(config: OperatorConfig, creds: Credentials) -> str:
    if config.leader_election.namespace:
        return config.leader_election.namespace
    with contextlib.suppress(OSError):
        return SA_NAMESPACE_FILE.read_text().strip()
    return creds.default_namespace or "default"


async def run(config: OperatorConfig) -> int:
    """Start the metrics server, wait for leadership if asked to (serving CRLs and OCSP read-only from the
    stored lists meanwhile), then run kopf until it stops."""
    soft, _ = raise_open_files_limit()
    logger.debug("Open files limit: %d.", soft)
    metrics = Metrics(build=build_info())
    server: MetricsServer | None = None
    if config.metrics.port:
        server = MetricsServer(metrics, host=config.metrics.bind, port=config.metrics.port)
        try:
            await server.start()
        except OSError as exc:
            logger.error(
                "Cannot serve metrics on port %d: %s; running without /metrics.", config.metrics.port, exc
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
        election = config.leader_election
        if election.enabled:
            creds = _login()
            lease_api = ApiClient(creds, timeout=10.0)
            lease = LeaseConfig(
                namespace=_lease_namespace(config, creds),
                name=election.name,
                identity=Identity(default_identity()),
                lease_duration=election.lease_duration,
                renew_deadline=election.renew_deadline,
                retry_period=election.retry_period,
            )
            elector = LeaderElector(lease_api, lease)
            metrics.set_leader(False)
            if config.revocation.port:
                # A standby answers CRL and OCSP too (the Service routes to every replica), read-only from
                # the stored lists, on its own client so that the Lease never waits behind it.
                mirror_api = ApiClient(creds, timeout=10.0, concurrency=4)
                cluster_wide = needs_cluster_scan(list(config.namespaces) or None)
                mirror = RevocationMirror(
                    mirror_api,
                    namespaces=list(config.namespaces),
                    cluster_wide=cluster_wide,
                    # MTLSClusterIssuers are served where the leader serves them (it watches them only
                    # with a cluster-wide scope, as handlers.build_registry does)
                    cluster_namespace=config.cluster_namespace if cluster_wide else None,
                    interval=config.revocation_mirror_interval.total_seconds(),
                )
                await mirror.start(config.revocation.bind, config.revocation.port)
            logger.info(
                "Leader election on: identity %s, lease %s/%s.",
                elector.identity,
                lease.namespace,
                lease.name,
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
        namespaces = list(config.namespaces) or None
        kopf_settings = kopf.OperatorSettings()
        # Exact namespaces need no cluster-wide listing of Namespaces and CRDs (least RBAC).
        kopf_settings.scanning.disabled = not needs_cluster_scan(namespaces)
        await kopf.operator(
            registry=build_registry(config, cluster_scope=needs_cluster_scan(namespaces)),
            # kopf would otherwise name itself after the OS user, which a container's uid may not have.
            identity=Identity(default_identity()),
            standalone=True,
            clusterwide=namespaces is None,
            namespaces=namespaces or (),
            memo=kopf.Memo(metrics=metrics),
            memories=WatchOnlyMemories(),  # nothing kept per object (controllers/handlers.py)
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
    config = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, config.log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # kopf logs every handled event at INFO: at 10k objects that drowns what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
