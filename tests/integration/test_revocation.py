"""Revocation end to end: a real operator process, the real API server, its HTTP responder, openssl and nginx.

The operator runs on its own namespace ``rev-<hex>`` (the shared one watches ``t-*``) with
MTLS_REVOCATION_PORT on a free loopback port, so the tests fetch CRLs and ask OCSP like relying parties do.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import (
    GROUP,
    VERSION,
    create_certificate,
    create_issuer,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from nginx_peer import Nginx, free_port, running_nginx
from operator_process import OperatorProcess

TIMEOUT = 60.0
SERVER_NAME = "nginx.rev.test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class Env:
    cluster: Any
    namespace: str
    port: int
    operator: OperatorProcess

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def revocation_urls(self, issuer: str) -> dict[str, str]:
        return {
            "crlURL": f"{self.base}/crl/{self.namespace}/{issuer}.crl",
            "ocspURL": f"{self.base}/ocsp/{self.namespace}/{issuer}",
        }


@pytest.fixture(scope="module")
def env(crds: Any, cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    namespace = f"rev-{uuid.uuid4().hex[:6]}"
    cluster.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    port = free_port()
    log = tmp_path_factory.mktemp("revocation") / "operator.log"
    proc = OperatorProcess(
        cluster.kubeconfig,
        log,
        "--namespace",
        namespace,
        env={
            "MTLS_REVOCATION_PORT": str(port),
            "MTLS_REVOCATION_BIND": "127.0.0.1",
            "MTLS_BACKOFF_BASE": "2",
        },
    )
    e = Env(cluster, namespace, port, proc.start())
    try:
        proc.wait_for_log("Revocation responder (CRL and OCSP) listening", timeout=30)
        create_issuer(cluster, namespace, "ec", {**self_signed("ec"), "revocation": e.revocation_urls("ec")})
        create_issuer(cluster, namespace, "plain", self_signed("plain"))
        wait_issuer_ready(cluster, namespace, "ec")
        wait_issuer_ready(cluster, namespace, "plain")
        yield e
    finally:
        print(e.operator.tail(80))
        e.operator.stop()  # the one a test restarted, if any
        proc.stop()
        cluster.core.delete_namespace(namespace)


# ---------------------------------------------------------------------------------------------------------
# Helpers


@dataclass(frozen=True)
class Leaf:
    name: str
    cert: x509.Certificate
    pem: bytes
    key_pem: bytes

    @property
    def serial(self) -> int:
        return int(self.cert.serial_number)


def _ca(env: Env, issuer: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(secret_data(env.cluster, env.namespace, f"{issuer}-ca")["tls.crt"])


def _leaf(env: Env, name: str) -> Leaf:
    data = secret_data(env.cluster, env.namespace, f"{name}-tls")
    cert = x509.load_pem_x509_certificate(data["tls.crt"])
    return Leaf(name, cert, cert.public_bytes(serialization.Encoding.PEM), data["tls.key"])


def _issue(env: Env, name: str, issuer: str = "ec", **extra: Any) -> Leaf:
    create_certificate(
        env.cluster,
        env.namespace,
        name,
        {
            "secretName": f"{name}-tls",
            "issuerRef": {"name": issuer},
            "commonName": name,
            "dnsNames": [SERVER_NAME] if name.startswith("server") else [f"{name}.rev.test"],
            **extra,
        },
    )
    wait_ready(env.cluster, env.namespace, name, timeout=TIMEOUT)
    return _leaf(env, name)


def _config_map(env: Env, issuer: str) -> Any:
    return env.cluster.core.read_namespaced_config_map(f"{issuer}-revocations", env.namespace)


def _crl(env: Env, issuer: str) -> x509.CertificateRevocationList:
    cm = _config_map(env, issuer)
    crl = x509.load_der_x509_crl(base64.b64decode(cm.binary_data["ca.crl.der"]))
    assert x509.load_pem_x509_crl(cm.data["ca.crl"].encode()) == crl
    assert crl.is_signature_valid(cast(Any, _ca(env, issuer).public_key())), (
        "the CRL verifies with the CA key"
    )
    return crl


def _on_crl(env: Env, issuer: str, serial: int) -> bool:
    try:
        return _crl(env, issuer).get_revoked_certificate_by_serial_number(serial) is not None
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise


def _mtlsctl(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mtls_operator.cli.main", *args, "-n", env.namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "KUBECONFIG": str(env.cluster.kubeconfig)},
    )


def _revoke(env: Env, leaf: Leaf, reason: str = "keyCompromise") -> None:
    done = _mtlsctl(env, "revoke", leaf.name, "--reason", reason, "-o", "json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["serialNumber"] == format(leaf.serial, "x")
    wait_for(
        lambda: _on_crl(env, "ec", leaf.serial), timeout=TIMEOUT, message=f"serial {leaf.serial:x} on the CRL"
    )


def _replaced(env: Env, old: Leaf) -> Leaf:
    """The certificate after it was re-issued for a revocation: Ready, with a serial not on the CRL."""

    def check() -> Leaf | None:
        obj = wait_ready(env.cluster, env.namespace, old.name, timeout=TIMEOUT)
        leaf = _leaf(env, old.name)
        if leaf.serial == old.serial or obj["status"].get("serialNumber") != format(leaf.serial, "x"):
            return None
        return None if _on_crl(env, "ec", leaf.serial) else leaf

    leaf: Leaf = wait_for(check, timeout=TIMEOUT, message=f"{old.name} re-issued with a serial not revoked")
    return leaf


def _ocsp_der(leaf: x509.Certificate, issuer: x509.Certificate) -> bytes:
    request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    return request.public_bytes(serialization.Encoding.DER)


def _post_ocsp(env: Env, issuer_name: str, leaf: x509.Certificate) -> ocsp.OCSPResponse:
    request = urllib.request.Request(
        f"{env.base}/ocsp/{env.namespace}/{issuer_name}",
        data=_ocsp_der(leaf, _ca(env, issuer_name)),
        headers={"Content-Type": "application/ocsp-request"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/ocsp-response"
        return ocsp.load_der_ocsp_response(resp.read())


# ---------------------------------------------------------------------------------------------------------
# 1. mtlsctl revoke: on the CRL, re-issued with a new key


def test_revoke_puts_the_serial_on_the_crl_and_reissues_with_a_new_key(env: Env) -> None:
    old = _issue(env, "web")
    assert not _on_crl(env, "ec", old.serial)
    _revoke(env, old)
    new = _replaced(env, old)

    def spki(leaf: Leaf) -> bytes:
        return leaf.cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    assert spki(new) != spki(old), "the replacement has a new key"
    assert new.key_pem != old.key_pem
    crl = _crl(env, "ec")
    entry = crl.get_revoked_certificate_by_serial_number(old.serial)
    assert entry is not None
    assert (
        entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
        is x509.ReasonFlags.key_compromise
    )
    assert crl.get_revoked_certificate_by_serial_number(new.serial) is None
    stored = json.loads(_config_map(env, "ec").data["revoked.json"])
    assert {
        "serial": format(old.serial, "x"),
        "certificate": "web",
        "reason": "keyCompromise",
    }.items() <= next(e for e in stored if e["serial"] == format(old.serial, "x")).items()
    assert [e["serial"] for e in stored if e["certificate"] == "web"] == [format(old.serial, "x")], (
        "only the certificate current at the request was revoked, not its replacement"
    )
    cm = _config_map(env, "ec")
    assert cm.metadata.labels["app.kubernetes.io/managed-by"] == "mtls-operator"
    assert cm.metadata.annotations["mtls.dev/revocations-for"] == "ec"
    assert int(cm.data["crlNumber"]) >= 2


# ---------------------------------------------------------------------------------------------------------
# 2. revocationPolicy on delete


def test_delete_revokes_only_with_revocation_policy_revoke(env: Env) -> None:
    kept = _issue(env, "gone-quietly")
    revoked = _issue(env, "gone-revoked", revocationPolicy="Revoke")
    assert (
        env.cluster.custom.get_namespaced_custom_object(
            GROUP, VERSION, env.namespace, "mtlscertificates", "gone-quietly"
        )["spec"]["revocationPolicy"]
        == "None"
    ), "the schema defaults revocationPolicy to None"
    for name in ("gone-quietly", "gone-revoked"):  # in this order: once the second is on the CRL, the first
        env.cluster.custom.delete_namespaced_custom_object(  # delete has long been handled
            GROUP, VERSION, env.namespace, "mtlscertificates", name
        )
    wait_for(
        lambda: _on_crl(env, "ec", revoked.serial), timeout=TIMEOUT, message="the deleted serial on the CRL"
    )
    entry = _crl(env, "ec").get_revoked_certificate_by_serial_number(revoked.serial)
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
    assert reason is x509.ReasonFlags.cessation_of_operation
    assert not _on_crl(env, "ec", kept.serial)


# ---------------------------------------------------------------------------------------------------------
# 3. OCSP: cryptography and openssl


@pytest.fixture(scope="module")
def revoked_and_good(env: Env) -> tuple[Leaf, Leaf]:
    bad = _issue(env, "ocsp-bad")
    good = _issue(env, "ocsp-good")
    _revoke(env, bad)
    return bad, good


def test_ocsp_answers_revoked_and_good_signed_by_the_ca(
    env: Env, revoked_and_good: tuple[Leaf, Leaf]
) -> None:
    bad, good = revoked_and_good
    ca = _ca(env, "ec")
    for leaf, expected in ((bad, ocsp.OCSPCertStatus.REVOKED), (good, ocsp.OCSPCertStatus.GOOD)):
        answer = _post_ocsp(env, "ec", leaf.cert)
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status is expected, leaf.name
        assert answer.serial_number == leaf.serial
        public_key, digest = ca.public_key(), answer.signature_hash_algorithm
        assert isinstance(public_key, ec.EllipticCurvePublicKey) and digest is not None
        public_key.verify(answer.signature, answer.tbs_response_bytes, ec.ECDSA(digest))  # raises if forged
    # A request about a certificate of another CA is not this responder's to answer.
    other = _issue(env, "other-ca-leaf", issuer="plain")
    request = urllib.request.Request(
        f"{env.base}/ocsp/{env.namespace}/ec", data=_ocsp_der(other.cert, _ca(env, "plain")), method="POST"
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert (
            ocsp.load_der_ocsp_response(resp.read()).response_status is ocsp.OCSPResponseStatus.UNAUTHORIZED
        )
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(f"{env.base}/crl/{env.namespace}/nobody.crl", timeout=10)
    assert missing.value.code == 404


def test_openssl_ocsp_says_revoked_and_good(
    env: Env, revoked_and_good: tuple[Leaf, Leaf], tmp_path: Path
) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        if _in_ci():
            pytest.fail("CI=true and openssl is not installed (make interop-deps)", pytrace=False)
        pytest.skip("openssl is not installed (make interop-deps)")
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(_ca(env, "ec").public_bytes(serialization.Encoding.PEM))
    outputs = {}
    for leaf, expected in ((revoked_and_good[0], "revoked"), (revoked_and_good[1], "good")):
        path = tmp_path / f"{leaf.name}.pem"
        path.write_bytes(leaf.pem)
        url = f"{env.base}/ocsp/{env.namespace}/ec"
        done = subprocess.run(
            [
                openssl,
                "ocsp",
                "-issuer",
                str(ca_pem),
                "-cert",
                str(path),
                "-url",
                url,
                "-CAfile",
                str(ca_pem),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        outputs[expected] = done.stdout + done.stderr
        print(f"$ openssl ocsp ... -cert {path.name}\n{outputs[expected]}")
        assert done.returncode == 0, outputs[expected]
        assert f"{path}: {expected}" in done.stdout, outputs[expected]
        assert "Response verify OK" in outputs[expected], outputs[expected]
    assert "Reason: keyCompromise" in outputs["revoked"]


def test_the_crl_is_served_over_http(env: Env, revoked_and_good: tuple[Leaf, Leaf]) -> None:
    with urllib.request.urlopen(f"{env.base}/crl/{env.namespace}/ec.crl", timeout=10) as resp:
        assert resp.headers["Content-Type"] == "application/pkix-crl"
        served = x509.load_der_x509_crl(resp.read())
    with urllib.request.urlopen(f"{env.base}/crl/{env.namespace}/ec.pem", timeout=10) as resp:
        assert x509.load_pem_x509_crl(resp.read()) == served
    assert served.get_revoked_certificate_by_serial_number(revoked_and_good[0].serial) is not None
    assert served.get_revoked_certificate_by_serial_number(revoked_and_good[1].serial) is None
    assert served.is_signature_valid(cast(Any, _ca(env, "ec").public_key()))


# ---------------------------------------------------------------------------------------------------------
# 4. nginx refuses a revoked client certificate


@pytest.fixture
def nginx(env: Env, revoked_and_good: tuple[Leaf, Leaf], tmp_path: Path) -> Iterator[Nginx]:
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if binary is None:
        if _in_ci():
            pytest.fail("CI=true and nginx is not installed (make interop-deps)", pytrace=False)
        pytest.skip("nginx is not installed (make interop-deps)")
    server = _issue(env, "server-nginx")
    files = {
        "ca.pem": _ca(env, "ec").public_bytes(serialization.Encoding.PEM),
        "crl.pem": _config_map(env, "ec").data["ca.crl"].encode(),
        "server.pem": server.pem,
        "server.key": server.key_pem,
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "server.key").chmod(0o600)
    server = f"""
    server_name {SERVER_NAME};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_certificate {tmp_path}/server.pem;
    ssl_certificate_key {tmp_path}/server.key;
    ssl_verify_client on;
    ssl_client_certificate {tmp_path}/ca.pem;
    ssl_crl {tmp_path}/crl.pem;
    default_type text/plain;
    location / {{ return 200 "hello $ssl_client_s_dn\\n"; }}"""
    with running_nginx(binary, tmp_path, server, TIMEOUT) as peer:
        yield peer


def _curl(port: int, ca: Path, cert: Path, key: Path) -> subprocess.CompletedProcess[str]:
    curl = shutil.which("curl")
    if curl is None:
        if _in_ci():
            pytest.fail("CI=true and curl is not installed (make interop-deps)", pytrace=False)
        pytest.skip("curl is not installed (make interop-deps)")
    return subprocess.run(
        [
            *(curl, "-sS", "--max-time", "10", "--cacert", str(ca)),
            *("--resolve", f"{SERVER_NAME}:{port}:127.0.0.1", "-w", "\nstatus=%{http_code}\n"),
            *("--cert", str(cert), "--key", str(key), f"https://{SERVER_NAME}:{port}/"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_nginx_refuses_a_revoked_client_certificate(
    nginx: Nginx, revoked_and_good: tuple[Leaf, Leaf], tmp_path: Path
) -> None:
    results = {}
    for leaf in revoked_and_good:
        cert, key = tmp_path / f"{leaf.name}.pem", tmp_path / f"{leaf.name}.key"
        cert.write_bytes(leaf.pem)
        key.write_bytes(leaf.key_pem)
        key.chmod(0o600)
        results[leaf.name] = _curl(nginx.port, tmp_path / "ca.pem", cert, key)
        print(f"$ curl --cert {cert.name} ...\n{results[leaf.name].stdout}{results[leaf.name].stderr}")
    bad, good = (results[leaf.name] for leaf in revoked_and_good)
    assert "status=200" in good.stdout and "hello CN=ocsp-good" in good.stdout, good.stdout + good.stderr
    assert "status=400" in bad.stdout, bad.stdout + bad.stderr
    assert "The SSL certificate error" in bad.stdout, bad.stdout  # nginx's page; the log says why
    log = nginx.error_log.read_text(errors="replace")
    print("nginx error.log:", *[line for line in log.splitlines() if "revoked" in line], sep="\n")
    assert "certificate revoked" in log, log[-2000:]


# ---------------------------------------------------------------------------------------------------------
# 5. Leaves carry the CRL distribution point and OCSP URL


def test_leaves_carry_crl_and_ocsp_urls_when_the_issuer_sets_them(env: Env) -> None:
    urls = env.revocation_urls("ec")
    leaf = _issue(env, "with-urls").cert
    points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert [n.value for p in points for n in (p.full_name or [])] == [urls["crlURL"]]
    aia = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [
        d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP
    ] == [urls["ocspURL"]]
    plain = _issue(env, "without-urls", issuer="plain").cert
    for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        with pytest.raises(x509.ExtensionNotFound):
            plain.extensions.get_extension_for_class(kind)


# ---------------------------------------------------------------------------------------------------------
# 6. A restarted operator serves what the ConfigMap holds, and signs nothing new for it


def test_a_restarted_operator_still_answers_revoked(
    env: Env, revoked_and_good: tuple[Leaf, Leaf], tmp_path: Path
) -> None:
    before = _config_map(env, "ec")
    env.operator.stop()
    env.operator = OperatorProcess(
        env.cluster.kubeconfig,
        tmp_path / "restarted.log",
        "--namespace",
        env.namespace,
        env={"MTLS_REVOCATION_PORT": str(env.port), "MTLS_REVOCATION_BIND": "127.0.0.1"},
    ).start()
    env.operator.wait_for_log("Revocation responder (CRL and OCSP) listening", timeout=30)
    bad, good = revoked_and_good

    def answer(leaf: Leaf) -> ocsp.OCSPCertStatus | None:
        try:
            return _post_ocsp(env, "ec", leaf.cert).certificate_status
        except urllib.error.HTTPError as exc:
            if exc.code == 404:  # the issuer is not reconciled yet
                return None
            raise

    assert (
        wait_for(lambda: answer(bad), timeout=TIMEOUT, message="OCSP after restart")
        is ocsp.OCSPCertStatus.REVOKED
    )
    assert answer(good) is ocsp.OCSPCertStatus.GOOD
    after = _config_map(env, "ec")
    assert after.metadata.resource_version == before.metadata.resource_version, "a fresh CRL is not re-signed"
    assert after.data["crlNumber"] == before.data["crlNumber"]
