"""A real Prometheus (Debian's `prometheus`) scrapes a real operator process and evaluates the shipped
alert rules: the expiration gauge equals the Secret's notAfter, a certificate made NotReady shows up in
mtls_certificate_ready_status, and its alert goes pending."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from tests.helpers import Cluster, wait_for

from mtls_objects import create_certificate, create_issuer, self_signed, wait_condition, wait_ready
from operator_process import OperatorProcess

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "mtls-operator" / "files" / "alerts.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        message = "prometheus is missing: `make prometheus-deps` installs Debian's prometheus package"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return found


class Prometheus:
    def __init__(self, binary: str, workdir: Path, target_port: int) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "mtls-operator", "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self._log = open(self.log, "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.ready, timeout=60, message="prometheus ready", ignore=(OSError,))

    def ready(self) -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as resp:
            return resp.status == 200

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        result = self.api("query", query=query)["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log.close()


def test_prometheus_sees_expiry_and_readiness_from_the_operator(
    prometheus_binary: str, cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    metrics_port = free_port()
    operator = OperatorProcess(
        crds.kubeconfig,
        tmp_path / "operator.log",
        "--namespace",
        ns,
        "--metrics-port",
        str(metrics_port),
        "--metrics-bind-address",
        "127.0.0.1",
        env={"MTLS_BACKOFF_BASE": "2"},
    )
    operator.start()
    prometheus = Prometheus(prometheus_binary, tmp_path, metrics_port)
    try:
        create_issuer(cluster, ns, "ca", self_signed("ca"))
        create_certificate(
            cluster,
            ns,
            "web",
            {"secretName": "web-tls", "issuerRef": {"name": "ca"}, "dnsNames": ["web.example"]},
        )
        wait_ready(cluster, ns, "web")
        secret = cluster.core.read_namespaced_secret("web-tls", ns)
        leaf = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
        selector = f'namespace="{ns}",name="web"'

        expiration = wait_for(
            lambda: prometheus.value(f"mtls_certificate_expiration_timestamp_seconds{{{selector}}}"),
            timeout=30,
            message="the expiration gauge scraped",
        )
        assert expiration == leaf.not_valid_after_utc.timestamp()
        assert prometheus.value(f'mtls_certificate_ready_status{{{selector},condition="True"}}') == 1
        assert prometheus.value('up{job="mtls-operator"}') == 1
        assert prometheus.value("mtls_build_info") == 1

        # Make it NotReady: point it at an issuer that does not exist.
        cluster.custom.patch_namespaced_custom_object(
            "mtls.dev",
            "v1alpha1",
            ns,
            "mtlscertificates",
            "web",
            {"spec": {"issuerRef": {"name": "missing"}}},
        )
        wait_condition(cluster, ns, "mtlscertificates", "web", "False", reason="IssuerNotFound")
        wait_for(
            lambda: prometheus.value(f'mtls_certificate_ready_status{{{selector},condition="False"}}') == 1,
            timeout=30,
            message="ready_status False scraped",
        )
        assert prometheus.value(f'mtls_certificate_ready_status{{{selector},condition="True"}}') == 0

        def not_ready_alert() -> dict[str, Any] | None:
            for alert in prometheus.api("alerts")["alerts"]:
                labels = alert["labels"]
                if labels.get("alertname") == "MTLSCertificateNotReady" and labels.get("namespace") == ns:
                    return dict(alert)
            return None

        alert = wait_for(not_ready_alert, timeout=30, message="MTLSCertificateNotReady pending")
        assert alert["state"] == "pending" and alert["labels"]["name"] == "web"

        # Every shipped rule evaluates without error on real series.
        def rules() -> list[dict[str, Any]]:
            return [rule for group in prometheus.api("rules")["groups"] for rule in group["rules"]]

        wait_for(lambda: {r["health"] for r in rules()} == {"ok"}, timeout=20, message="every rule healthy")
        assert len(rules()) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
        firing = {
            a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"] if a["state"] == "firing"
        }
        assert "MTLSOperatorDown" not in firing

        # Series disappear with their object (Prometheus marks them stale at the next scrape).
        cluster.custom.delete_namespaced_custom_object("mtls.dev", "v1alpha1", ns, "mtlscertificates", "web")
        wait_for(
            lambda: prometheus.value(f"mtls_certificate_ready_status{{{selector}}}") is None,
            timeout=30,
            message="the certificate's series gone",
        )
        assert (
            prometheus.value(f'mtls_issuer_ready_status{{namespace="{ns}",name="ca",condition="True"}}') == 1
        )
    finally:
        prometheus.stop()
        operator.stop()
