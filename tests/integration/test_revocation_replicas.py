"""Issue 10, finding 7 (replicas): with two replicas under leader election, the revocation Service may route
to either. Both answer a CRL GET and an OCSP request correctly: the leader from its store, the standby
read-only from the stored ConfigMap and the issuer's CA Secret. When the leader dies, the standby keeps
answering through the failover and then answers as the leader.

Each replica listens on its own loopback port (two processes on one host); the test plays the Service by
asking both."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from kubernetes import client
from kubernetes.client.rest import ApiException
from tests.helpers import Cluster, wait_for

from mtls_objects import (
    create_certificate,
    create_issuer,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from nginx_peer import free_port
from operator_process import OperatorProcess

TIMEOUT = 60.0


class Replica(OperatorProcess):
    """An operator with --leader-elect and its own revocation port. A standby never logs "mtls-operator
    started" (kopf starts only once it leads), so starting waits for the leader-election line instead."""

    def __init__(self, cluster: Cluster, log: Path, namespace: str) -> None:
        self.port = free_port()
        args = ["--namespace", namespace, "--leader-elect", "--leader-elect-namespace", namespace]
        env = {
            "MTLS_REVOCATION_PORT": str(self.port),
            "MTLS_REVOCATION_BIND": "127.0.0.1",
            "MTLS_REVOCATION_MIRROR_INTERVAL": "1",
            "MTLS_BACKOFF_BASE": "2",
        }
        super().__init__(cluster.kubeconfig, log, *args, env=env)

    def wait_for_log(self, fragment: str, timeout: float) -> None:
        super().wait_for_log(
            "Leader election on" if fragment == "mtls-operator started" else fragment, timeout
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _holder(cluster: Cluster, ns: str) -> str:
    """Who holds the operator's Lease ("" before anyone created it)."""
    try:
        lease = client.CoordinationV1Api(cluster.api_client).read_namespaced_lease("mtls-operator", ns)
    except ApiException as exc:
        if exc.status == 404:
            return ""
        raise
    return str(lease.spec.holder_identity or "")


def _leads(cluster: Cluster, ns: str, replica: Replica) -> bool:
    assert replica.proc is not None
    return _holder(cluster, ns).endswith(f"_{replica.proc.pid}")


def _get(url: str, data: bytes | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/ocsp-request"})
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _ocsp_request(leaf: x509.Certificate, ca: x509.Certificate) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(leaf, ca, hashes.SHA1())
    return builder.build().public_bytes(serialization.Encoding.DER)


def _answers(replica: Replica, ns: str, crl_der: bytes, ca: x509.Certificate, leaves: dict[str, Any]) -> bool:
    """Whether ``replica`` serves exactly the stored CRL and answers OCSP as expected, signed by the CA."""
    try:
        status, served = _get(f"{replica.base}/crl/{ns}/ec.crl")
    except OSError:
        return False
    if status != 200 or served != crl_der:
        return False
    for expected, leaf in leaves.items():
        status, body = _get(f"{replica.base}/ocsp/{ns}/ec", _ocsp_request(leaf, ca))
        if status != 200:
            return False
        answer = ocsp.load_der_ocsp_response(body)
        if answer.response_status is not ocsp.OCSPResponseStatus.SUCCESSFUL:
            return False
        assert answer.serial_number == leaf.serial_number
        digest = answer.signature_hash_algorithm
        assert digest is not None
        cast(ec.EllipticCurvePublicKey, ca.public_key()).verify(
            answer.signature, answer.tbs_response_bytes, ec.ECDSA(digest)
        )
        if answer.certificate_status.name.lower() != expected:
            return False
    return True


def _stored_crl(cluster: Cluster, ns: str) -> bytes:
    cm = cluster.core.read_namespaced_config_map("ec-revocations", ns)
    return base64.b64decode(cm.binary_data["ca.crl.der"])


def test_both_replicas_answer_crl_and_ocsp_and_the_standby_keeps_answering_through_a_failover(
    cluster: Cluster, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    ns = own_namespace
    a = Replica(cluster, tmp_path / "a.log", ns).start()
    b: Replica | None = None
    try:
        wait_for(lambda: _leads(cluster, ns, a), timeout=30, message="a leads")
        b = Replica(cluster, tmp_path / "b.log", ns).start()
        create_issuer(cluster, ns, "ec", {**self_signed("ec"), "revocation": {}})
        wait_issuer_ready(cluster, ns, "ec")
        for name in ("bad", "good"):
            create_certificate(
                cluster,
                ns,
                name,
                {"secretName": f"{name}-tls", "issuerRef": {"name": "ec"}, "dnsNames": [f"{name}.test"]},
            )
            wait_ready(cluster, ns, name, timeout=TIMEOUT)
        leaves = {
            name: x509.load_pem_x509_certificate(secret_data(cluster, ns, f"{name}-tls")["tls.crt"])
            for name in ("bad", "good")
        }
        ca = x509.load_pem_x509_certificate(secret_data(cluster, ns, "ec-ca")["tls.crt"])
        time.sleep(1.1)  # mtlsctl stamps whole seconds; the request must be later than notBefore
        done = subprocess.run(
            [sys.executable, "-m", "mtls_operator.cli.main", "revoke", "bad", "-n", ns, "-o", "json"],
            capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "KUBECONFIG": str(cluster.kubeconfig)},
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["serialNumber"] == format(leaves["bad"].serial_number, "x")

        def revoked_on_crl() -> bool:
            try:
                crl = x509.load_der_x509_crl(_stored_crl(cluster, ns))
            except Exception:  # not there yet
                return False
            return crl.get_revoked_certificate_by_serial_number(leaves["bad"].serial_number) is not None

        wait_for(revoked_on_crl, timeout=TIMEOUT, message="the revoked serial in the stored CRL")
        crl_der = _stored_crl(cluster, ns)
        expected = {"revoked": leaves["bad"], "good": leaves["good"]}
        for replica in (a, b):
            wait_for(
                lambda r=replica: _answers(r, ns, crl_der, ca, expected),  # type: ignore[misc]
                timeout=30,
                message=f"replica on port {replica.port} answers CRL and OCSP",
            )
        assert _leads(cluster, ns, a) and not _leads(cluster, ns, b), "b answered as a standby"
        status, pem = _get(f"{b.base}/crl/{ns}/ec.pem")
        assert status == 200 and x509.load_pem_x509_crl(pem) == x509.load_der_x509_crl(crl_der)
        assert _get(f"{b.base}/crl/{ns}/nobody.crl")[0] == 404

        # The leader dies: the standby answers until it takes the Lease, then hands the port to its own
        # store (a short gap: kopf starts and reconciles the issuer), then answers as the leader.
        a.kill()
        killed = time.monotonic()
        before: list[float] = []  # failed CRL GETs while b stood by
        after: list[float] = []  # ... and once it led, until it answered as the leader
        took_over: float | None = None
        while True:
            elapsed = time.monotonic() - killed
            assert elapsed < 90, "b did not take over and answer within 90 s"
            if took_over is None and _leads(cluster, ns, b):
                took_over = elapsed
            if took_over is not None and _answers(b, ns, _stored_crl(cluster, ns), ca, expected):
                break
            try:
                status, body = _get(f"{b.base}/crl/{ns}/ec.crl")
                ok = status == 200 and body == crl_der
            except OSError:
                ok = False
            if not ok:
                (before if took_over is None else after).append(elapsed)
            time.sleep(0.1)
        answered = time.monotonic() - killed
        gap = (max(after) - min(after)) if after else 0.0
        print(
            f"\nfailover: b took the Lease {took_over:.1f} s after a was killed, answering every CRL GET "
            f"until then ({len(before)} failed); then {len(after)} failed GETs over {gap:.1f} s while its "
            f"own store started; answered as the leader {answered:.1f} s after the kill"
        )
        assert before == [], f"the standby stopped answering before it led, at {before}"
        assert gap < 10, "the handover from the standby's copy to the leader's store took too long"
    finally:
        for replica in (a, b):
            if replica is not None:
                print(replica.tail(30))
                replica.stop()
