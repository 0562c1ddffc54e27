"""Everything under tests/integration talks to the real control plane: mark it `integration`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)


# --------------------------------------------------------------------------------------------------
# The CRDs and a running operator, shared by the suites that need them.

from collections.abc import Iterator  # noqa: E402

from mtls_objects import apply_crds  # noqa: E402
from operator_process import OperatorProcess  # noqa: E402

REPO = HERE.parent.parent


@pytest.fixture(scope="session")
def crds(cluster: Any) -> Any:
    apply_crds(cluster)
    return cluster


# No kubelet runs here, so no rollout ever completes: a short rollout timeout frees in-flight slots.
FAST_ROLLOUTS = {
    "MTLS_BACKOFF_BASE": "2",
    "MTLS_ROLLOUT_COALESCE": "2",
    "MTLS_ROLLOUT_MIN_INTERVAL": "3",
    "MTLS_ROLLOUT_TIMEOUT": "3",
    "MTLS_ROLLOUT_MAX_PER_HOUR": "4",
}


CLUSTER_RESOURCES = "t-cluster-resources"  # where the shared operator keeps MTLSClusterIssuers' Secrets


@pytest.fixture(scope="session")
def operator(crds: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator, watching the test namespaces (t-*) and MTLSClusterIssuers, with a short retry base so
    backoff is testable; it logs in as a user of its own, so the audit log tells its requests apart
    (`operator.writes()`)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        crds.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=CLUSTER_RESOURCES)))
    except ApiException as error:
        if error.status != 409:
            raise
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    env = {**FAST_ROLLOUTS, "MTLS_CLUSTER_RESOURCE_NAMESPACE": CLUSTER_RESOURCES}
    proc = OperatorProcess.audited(crds, log, "--namespace", "t-*", env=env)
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def own_namespace(cluster: Any) -> Iterator[str]:
    """A namespace outside the shared operator's `t-*` glob, so only the operator a test starts acts in it."""
    import uuid

    from kubernetes import client

    name = f"own-{uuid.uuid4().hex[:8]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    cluster.core.delete_namespace(name)


@pytest.fixture
def tls_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The TLS secrets of this test's handshakes (tests/tls_wire.py reads what they negotiated off the
    wire with them): pyOpenSSL's (tlsio's contexts get a key-log callback) and, in the file ``.path``,
    those of any peer told to write there (Node's --tls-keylog, SSLKEYLOGFILE, Python's keylog_filename)."""
    from mtls_operator.cli import tlsio
    from tls_wire import KeyLog

    keys = KeyLog(tmp_path / "tls-keys.log")
    original = tlsio._context

    def with_keylog(*args: Any, **kwargs: Any) -> Any:
        ctx = original(*args, **kwargs)
        ctx.set_keylog_callback(lambda _conn, line: keys.add(line))
        return ctx

    monkeypatch.setattr(tlsio, "_context", with_keylog)
    return keys


@pytest.fixture(scope="module")
def helm(controlplane_binaries: Any) -> str:
    """The helm binary built with the control plane; missing fails under CI=true, else skips."""
    if controlplane_binaries.helm is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("CI=true and the control-plane binaries have no helm", pytrace=False)
        pytest.skip("no helm among the control-plane binaries: `make controlplane`")
    return str(controlplane_binaries.helm)


# Restarts as soon as a renewal is written (the defaults pace restarts over minutes): for the node tests.
PROMPT_ROLLOUTS = {"MTLS_ROLLOUT_COALESCE": "1", "MTLS_ROLLOUT_MIN_INTERVAL": "1"}


@pytest.fixture
def prompt_operator(own_namespace: str, crds: Any, tmp_path: Path) -> Iterator[OperatorProcess]:
    """An operator watching only `own_namespace`, restarting workloads promptly after a renewal."""
    proc = OperatorProcess.audited(
        crds, tmp_path / "operator.log", "--namespace", own_namespace, env=PROMPT_ROLLOUTS
    )
    proc.start()
    yield proc
    proc.stop()
