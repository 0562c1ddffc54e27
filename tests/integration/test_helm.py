"""The Helm chart against the real API server: lint, a server-side dry run of everything it renders, and
a real `helm install` / `helm uninstall` (no kubelet here, so the Deployment is scaled to 0)."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.helpers import Cluster

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "mtls-operator"


def run(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig), "HELM_CACHE_HOME": "/tmp/helm-cache"}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_helm_lint_is_clean(helm: str, cluster: Cluster) -> None:
    result = run(cluster, helm, "lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


@pytest.mark.parametrize(
    "values",
    [
        pytest.param(["--set", "dashboard.enabled=true"], id="cluster-wide"),
        pytest.param(["--set", "scope.namespaces={NS}", "--set", "replicaCount=1"], id="namespaced"),
    ],
)
def test_the_server_accepts_every_rendered_object(
    helm: str, cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path, values: list[str]
) -> None:
    """ServiceMonitor and PrometheusRule need the Prometheus Operator's CRDs, which this cluster lacks;
    tests/unit/test_chart.py checks their content, and test_prometheus*.py runs the rules."""
    values = [v.replace("NS", own_namespace) for v in values]
    rendered = run(cluster, helm, "template", "dry", str(CHART), "--namespace", own_namespace, *values)
    assert rendered.returncode == 0, rendered.stderr
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "Service"} <= {
        d["kind"] for d in docs
    }
    path = tmp_path / "rendered.yaml"
    path.write_text(rendered.stdout)
    kubectl = str(Path(helm).parent / "kubectl")
    result = run(
        cluster,
        kubectl,
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=mtls-chart-test",
        "--dry-run=server",
        "-f",
        str(path),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("(server dry run)") == len(docs), result.stdout


def test_helm_install_and_uninstall(helm: str, cluster: Cluster, crds: Any, own_namespace: str) -> None:
    release = f"mtls-{uuid.uuid4().hex[:6]}"
    result = run(
        cluster,
        helm,
        "install",
        release,
        str(CHART),
        "--namespace",
        own_namespace,
        "--set",
        "replicaCount=0",
        # The session's CRDs are already installed (by the `crds` fixture): the dry run above covers the
        # chart's copy of them, and the unit tests that it equals crds/.
        "--set",
        "crds.enabled=false",
        "--set",
        "dashboard.enabled=true",
        "--wait",
        "--timeout",
        "60s",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "mtls-operator" in result.stdout  # NOTES.txt
    try:
        fullname = f"{release}-mtls-operator"
        deployment = cluster.apps.read_namespaced_deployment(fullname, own_namespace)
        assert deployment.spec.replicas == 0
        assert cluster.core.read_namespaced_service_account(fullname, own_namespace)
        assert cluster.core.read_namespaced_service(f"{fullname}-metrics", own_namespace)
        rules = list(cluster.rbac.read_cluster_role(fullname).rules)
        rules += cluster.rbac.read_namespaced_role(f"{fullname}-leader-election", own_namespace).rules
        for rule in rules:  # as the server stored them: no wildcard anywhere
            for values in (rule.verbs, rule.resources, rule.api_groups, rule.resource_names or []):
                assert "*" not in values, rule
        assert cluster.rbac.read_namespaced_role(f"{fullname}-leader-election", own_namespace)
        status = run(cluster, helm, "status", release, "--namespace", own_namespace)
        assert "STATUS: deployed" in status.stdout
    finally:
        result = run(cluster, helm, "uninstall", release, "--namespace", own_namespace, "--wait")
        assert result.returncode == 0, result.stdout + result.stderr
    from kubernetes.client.rest import ApiException

    with pytest.raises(ApiException) as info:
        cluster.rbac.read_cluster_role(f"{release}-mtls-operator")
    assert info.value.status == 404
