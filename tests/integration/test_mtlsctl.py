"""mtlsctl's cluster commands against the real API server and the running operator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import wait_for
from mtls_objects import create_certificate, create_issuer, get, self_signed, wait_issuer_ready, wait_ready

REQUEST_TOKEN = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z/[0-9a-f]{8}$")


def mtlsctl(kubeconfig: Path, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtls_operator.cli.main", *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


def mtlsctl_json(kubeconfig: Path, *args: str) -> tuple[int, Any]:
    proc = mtlsctl(kubeconfig, *args, "-o", "json")
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def issued(operator: Any, cluster: Any, namespace: str) -> dict[str, Any]:
    create_issuer(cluster, namespace, "root", self_signed("root", "MLDSA", 65))
    wait_issuer_ready(cluster, namespace, "root")
    create_certificate(
        cluster,
        namespace,
        "web",
        {
            "secretName": "web-tls",
            "issuerRef": {"name": "root"},
            "dnsNames": ["web.example.com"],
            "privateKey": {"algorithm": "MLDSA", "size": 65},
        },
    )
    return wait_ready(cluster, namespace, "web", timeout=90)


def test_status_shows_conditions_dates_and_events(
    cluster: Any, namespace: str, issued: dict[str, Any]
) -> None:
    code, doc = mtlsctl_json(cluster.kubeconfig, "status", "certificate", "web", "-n", namespace)
    assert code == 0
    assert doc["ready"] == "True"
    assert doc["algorithm"] == "ML-DSA-65"
    assert doc["notAfter"] == issued["status"]["notAfter"]
    assert doc["renewalTime"] == issued["status"]["renewalTime"]
    assert {c["type"]: c["status"] for c in doc["conditions"]}["Ready"] == "True"
    events = wait_for(
        lambda: mtlsctl_json(cluster.kubeconfig, "status", "certificate", "web", "-n", namespace)[1][
            "events"
        ],
        timeout=30,
        message="an Issued event",
    )
    assert any(e["reason"] == "Issued" for e in events), events

    text = mtlsctl(cluster.kubeconfig, "-n", namespace, "status", "mcert", "web", check=True).stdout
    assert text.startswith(f"MTLSCertificate {namespace}/web\n")
    for heading in ("Conditions", "Events", "Not after", "Renewal at"):
        assert heading in text, text


def test_status_of_a_missing_certificate_says_so(cluster: Any, namespace: str) -> None:
    proc = mtlsctl(cluster.kubeconfig, "status", "certificate", "nope", "-n", namespace)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"mtlsctl: MTLSCertificate {namespace}/nope does not exist."


def test_inspect_secret_verifies_the_chain_and_the_key(
    cluster: Any, namespace: str, issued: dict[str, Any]
) -> None:
    code, doc = mtlsctl_json(cluster.kubeconfig, "inspect", "secret", "web-tls", "-n", namespace)
    assert code == 0
    leaf = doc["certificate"]
    assert leaf["dnsNames"] == ["web.example.com"]
    assert leaf["keyAlgorithm"] == "ML-DSA-65"
    assert leaf["signatureAlgorithm"] == "ML-DSA-65"
    assert leaf["fingerprintSHA256"] == issued["status"]["fingerprint"]
    assert leaf["issuer"] == "CN=root root"
    assert doc["chain"]["verified"] is True
    assert doc["keyMatches"] is True
    assert doc["ownerCertificate"] == "web"
    assert doc["managedByOperator"] is True
    for fmt in ("text", "yaml", "json"):
        out = mtlsctl(cluster.kubeconfig, "inspect", "secret", "web-tls", "-n", namespace, "-o", fmt).stdout
        assert "PRIVATE KEY" not in out


def test_inspect_reports_a_key_that_does_not_match(
    cluster: Any, namespace: str, issued: dict[str, Any]
) -> None:
    from kubernetes import client

    own = cluster.core.read_namespaced_secret("web-tls", namespace)
    # A copy the operator does not manage, with another certificate's key.
    create_certificate(
        cluster,
        namespace,
        "other",
        {"secretName": "other-tls", "issuerRef": {"name": "root"}, "commonName": "other",
         "privateKey": {"algorithm": "MLDSA", "size": 65}},
    )  # fmt: skip
    wait_ready(cluster, namespace, "other", timeout=90)
    other = cluster.core.read_namespaced_secret("other-tls", namespace)
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="mixed"),
            type="kubernetes.io/tls",
            data={
                "tls.crt": own.data["tls.crt"],
                "tls.key": other.data["tls.key"],
                "ca.crt": own.data["ca.crt"],
            },
        ),
    )
    code, doc = mtlsctl_json(cluster.kubeconfig, "inspect", "secret", "mixed", "-n", namespace)
    assert code == 1
    assert doc["keyMatches"] is False
    assert doc["chain"]["verified"] is True
    assert doc["managedByOperator"] is False


def test_renew_sets_the_annotation_and_the_operator_reissues(
    cluster: Any, namespace: str, issued: dict[str, Any]
) -> None:
    # A request is a token: acted on once, even within the second the certificate was issued in.
    code, doc = mtlsctl_json(cluster.kubeconfig, "renew", "web", "-n", namespace)
    assert code == 0
    assert REQUEST_TOKEN.match(doc["value"]), doc
    annotations = get(cluster, namespace, "mtlscertificates", "web")["metadata"]["annotations"]
    assert annotations["mtls.dev/renew-requested-at"] == doc["value"]

    def reissued() -> dict[str, Any] | None:
        status = get(cluster, namespace, "mtlscertificates", "web").get("status") or {}
        return status if status.get("serialNumber") != issued["status"]["serialNumber"] else None

    status = wait_for(reissued, timeout=60, message="a re-issued certificate")
    assert status["revision"] == issued["status"]["revision"] + 1
    assert status["requests"]["renew"] == doc["value"], "the outcome is visible: the request was fulfilled"
    secret = cluster.core.read_namespaced_secret("web-tls", namespace)
    assert secret.metadata.annotations["mtls.dev/renew-request-fulfilled"] == doc["value"]


def test_check_reports_healthy_crds_and_a_reconciling_operator(
    cluster: Any, namespace: str, issued: dict[str, Any]
) -> None:
    code, doc = mtlsctl_json(cluster.kubeconfig, "check", "-n", namespace)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["crd/mtlscertificates.mtls.dev"]["ok"], checks
    assert checks["crd/mtlsissuers.mtls.dev"]["ok"], checks
    assert checks["operator"]["ok"], checks
    assert checks["mtlscertificates"]["message"].startswith("1/1 in namespace"), checks
    assert code == 0 and doc["ok"]


def test_check_fails_clearly_without_an_api_server(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "http://127.0.0.1:1"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    started = time.monotonic()
    code, doc = mtlsctl_json(kubeconfig, "check")
    assert code == 1
    assert doc["checks"][0]["name"] == "api-server" and not doc["checks"][0]["ok"]
    assert time.monotonic() - started < 30
