"""Fixtures shared by every suite.

* `cluster` (session): a real control plane (etcd, kube-apiserver, kube-controller-manager) started in a
  temporary directory, with ready `kubernetes` clients. Without the binaries it skips, naming
  `make controlplane`; with CI=true it fails instead, so CI never passes by skipping.
* `node` (session): a real node on that control plane (kube-scheduler, containerd, kubelet; see
  mtls_operator.testing.node), for tests whose pods must run. Skips without root or `make node`; with
  CI=true it fails instead.
* `namespace`: a fresh namespace per test, deleted afterwards.
* When a test that uses `cluster` fails, the report gets the tail of each component's log.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

# Test modules import shared code as `tests.<module>`; pytest (prepend import mode) puts only tests/ on
# sys.path, so put the repository root there too. A no-op when pytest runs as `python -m pytest` from it.
REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.helpers import Cluster  # noqa: E402

from mtls_operator.testing.controlplane import (  # noqa: E402
    Binaries,
    BinariesMissingError,
    ControlPlane,
    ControlPlaneError,
    default_bin_dir,
    find_binaries,
)
from mtls_operator.testing.node import Node, NodeMissingError  # noqa: E402

CONTROL_PLANE = pytest.StashKey[ControlPlane]()
NODE = pytest.StashKey[Node]()
LOG_TAIL_LINES = 30


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _announce(config: pytest.Config, line: str) -> None:
    """Write a line to the terminal even while output is captured."""
    reporter: Any = config.pluginmanager.get_plugin("terminalreporter")
    capture: Any = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line)
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line(line)


def pytest_report_header(config: pytest.Config) -> str:
    try:
        binaries = find_binaries()
    except BinariesMissingError:
        try:
            where = str(default_bin_dir())
        except ControlPlaneError as error:
            where = str(error)
        return f"controlplane: binaries missing ({where}); `make controlplane` builds them"
    return f"controlplane: binaries in {binaries.bin_dir}"


@pytest.fixture(scope="session")
def controlplane_binaries() -> Binaries:
    """The built control-plane binaries; skips without them (fails instead when CI=true)."""
    try:
        return find_binaries()
    except BinariesMissingError as error:
        if _in_ci():
            pytest.fail(f"CI=true and {error}", pytrace=False)
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, controlplane_binaries: Binaries
) -> Iterator[Cluster]:
    run_dir = tmp_path_factory.mktemp("controlplane")
    # The audit log records what each operator a test runs asked of the API server (tests/audit.py).
    plane = ControlPlane.start(
        run_dir, bin_dir=controlplane_binaries.bin_dir, die_with_parent=True, audit=True
    )
    request.config.stash[CONTROL_PLANE] = plane
    api_client = None
    try:
        connected = Cluster.of(plane)
        api_client = connected.api_client
        _announce(
            request.config,
            f"controlplane: kube-apiserver {connected.version} ready at {plane.server} in "
            f"{plane.started_in:.1f}s (logs in {run_dir / 'logs'})",
        )
        yield connected
    finally:
        if api_client is not None:
            api_client.close()
        del request.config.stash[CONTROL_PLANE]
        plane.stop()


@pytest.fixture(scope="session")
def node(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[Node]:
    """A real node (kube-scheduler, containerd, kubelet) on `cluster`: its pods run.

    It is tainted (`mtls_operator.testing.node.TAINT`): only pods that tolerate it are placed on it, so
    tests written for a control plane without a node keep their Pending pods.
    Without what it needs (root, `make node`) it skips, naming the target; with CI=true it fails instead.
    A node that has what it needs but does not come up is an error either way.
    """
    try:
        started = Node.start(cluster.control_plane, die_with_parent=True, taint=True)
    except NodeMissingError as error:
        if _in_ci():
            pytest.fail(f"CI=true and the node cannot start: {error}", pytrace=False)
        pytest.skip(str(error))
    request.config.stash[NODE] = started
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in started.timings.items())
    _announce(
        request.config,
        f"node: {started.name} Ready in {started.started_in:.1f}s ({timings}); "
        f"operator image {started.operator_image}; logs in {started.log_dir()}",
    )
    try:
        yield started
    finally:
        del request.config.stash[NODE]
        started.stop()


@pytest.fixture(scope="session")
def openssl() -> str:
    """The `openssl` command line (Debian's package; `make interop-deps` installs it). Without it a test
    skips, naming the target; with CI=true it fails instead, so CI never passes by skipping."""
    found = shutil.which("openssl") or next(
        (str(p) for p in (Path("/usr/bin/openssl"),) if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "the openssl command line is not installed: `make interop-deps` installs it"
        if _in_ci():
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return found


def _namespace_name(test_name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")[:48].rstrip("-")
    return f"t-{slug}-{uuid.uuid4().hex[:6]}"


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """The name of a namespace made for this test; deleted (without waiting for it to go) afterwards."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    name = _namespace_name(request.node.name)
    cluster.core.create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels={"mtls.dev/test": "true"}))
    )
    yield name
    try:
        cluster.core.delete_namespace(name)
    except ApiException as error:
        if error.status != 404:
            raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed and "cluster" in getattr(item, "fixturenames", ()):
        plane = item.config.stash.get(CONTROL_PLANE, None)
        if plane is not None:
            report.sections.append(
                ("control plane log tails", plane.format_log_tails(LOG_TAIL_LINES) or "(no logs)")
            )
    if report.failed and "node" in getattr(item, "fixturenames", ()):
        started = item.config.stash.get(NODE, None)
        if started is not None:
            report.sections.append(("node log tails", started.format_log_tails(LOG_TAIL_LINES)))
    return report
