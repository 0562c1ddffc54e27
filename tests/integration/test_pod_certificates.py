"""The Pod Certificate signer on the real control plane (Node authorizer, NodeRestriction).

Every request is created the way a kubelet creates it: as ``system:node:<name>`` (group ``system:nodes``)
for a pod bound to that node, naming the pod's ServiceAccount and the UIDs the API records, with a stub
PKCS#10 request signed by a key only the test holds. The API server itself checks that (and would refuse
anything else); the operator then answers with Issued, Denied or Failed.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for
from mtls_objects import create_issuer, secret_data, self_signed, wait_issuer_ready
from mtls_operator.cli.tlsio import EchoServer, client_handshake
from nginx_peer import free_port
from operator_process import OperatorProcess
from pod_certificates import KubeletIdentity, key_pem, new_key, read_request, wait_answered

CLUSTER_RESOURCES = "t-cluster-resources"  # the shared operator's --cluster-resource-namespace
SPIFFE = "spiffe://cluster.local/ns/{namespace}/sa/{account}"


@pytest.fixture
def kubelet(cluster: Any) -> Iterator[KubeletIdentity]:
    identity = KubeletIdentity.create(cluster)
    yield identity
    identity.close()


def service_account(cluster: Any, namespace: str, name: str) -> client.V1ServiceAccount:
    created: client.V1ServiceAccount = cluster.core.create_namespaced_service_account(
        namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name=name))
    )
    return created


def leaf_of(request: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificates(request["status"]["certificateChain"].encode())[0]


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def spiffe_ids(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return list(san.get_values_for_type(x509.UniformResourceIdentifier))


def events_of(cluster: Any, namespace: str, name: str, event_type: str) -> list[client.CoreV1Event]:
    """The events of ``event_type`` about the request ``name``; the signer posts them after it answers, so
    they are waited for (a request's answer alone does not mean its event is there yet)."""

    def posted() -> list[client.CoreV1Event]:
        events: list[client.CoreV1Event] = cluster.core.list_namespaced_event(
            namespace, field_selector=f"involvedObject.name={name},involvedObject.kind=PodCertificateRequest"
        ).items
        return [e for e in events if e.type == event_type]

    return wait_for(posted, timeout=30, message=f"a {event_type} event about {name}")


def write_credentials(tmp: Path, name: str, request: dict[str, Any], key: Any) -> tuple[Path, Path]:
    chain, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    chain.write_text(request["status"]["certificateChain"])
    key_file.write_bytes(key_pem(key))
    key_file.chmod(0o600)
    return chain, key_file


MESH_POLICY = {
    "allowedURIs": [
        "spiffe://{trustDomain}/ns/{namespace}/sa/web",
        "spiffe://{trustDomain}/ns/{namespace}/sa/api",
    ],
    "allowedAlgorithms": [{"algorithm": "ECDSA"}],
    "maxDuration": "3h",
}


def test_a_kubelets_requests_are_issued_with_spiffe_ids_and_times_and_complete_a_handshake(
    operator: Any, cluster: Any, namespace: str, kubelet: KubeletIdentity, tmp_path: Path
) -> None:
    create_issuer(
        cluster, namespace, "mesh", {**self_signed("mesh"), "podCertificates": {}, "policy": MESH_POLICY}
    )
    wait_issuer_ready(cluster, namespace, "mesh")
    signer = f"mtls.dev/{namespace}.mesh"
    for account in ("web", "api"):
        service_account(cluster, namespace, account)
    web_pod = kubelet.bind_pod(namespace, "web-0", "web")
    api_pod = kubelet.bind_pod(namespace, "api-0", "api")
    asked = datetime.now(UTC)
    # web: 2 hours asked (under the policy's 3h), refresh 90 minutes before expiry; api: 24 hours asked.
    web_name, web_key = kubelet.request(
        web_pod, signer, max_expiration=7200, user_annotations={"mtls.dev/refresh-before": "90m"}
    )
    api_name, api_key = kubelet.request(api_pod, signer, max_expiration=86400)
    web = wait_answered(cluster, namespace, web_name)
    api = wait_answered(cluster, namespace, api_name)
    ca = x509.load_pem_x509_certificate(secret_data(cluster, namespace, "mesh-ca")["ca.crt"])
    for request, account, key, lifetime in (
        (web, "web", web_key, timedelta(hours=2)),
        (api, "api", api_key, timedelta(hours=3)),
    ):
        status = request["status"]
        (issued,) = status["conditions"]
        assert (issued["type"], issued["reason"]) == ("Issued", "Issued"), issued
        leaf = leaf_of(request)
        assert spiffe_ids(leaf) == [SPIFFE.format(namespace=namespace, account=account)]
        assert leaf.subject == x509.Name([]), "a SPIFFE identity: no subject, the URI is the name"
        leaf.verify_directly_issued_by(ca)
        assert leaf.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) == key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ), "issued for the kubelet's key"
        not_before, not_after = when(status["notBefore"]), when(status["notAfter"])
        assert (not_before, not_after) == (leaf.not_valid_before_utc, leaf.not_valid_after_utc)
        assert not_after - not_before == lifetime, "maxExpirationSeconds honoured, capped by maxDuration"
        assert asked - timedelta(minutes=4) <= not_before <= asked, "backdated 3 minutes for clock skew"
        usages = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert set(usages) == {x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH}
    # beginRefreshAt: 90 minutes before notAfter as web asked; at 2/3 of the lifetime for api.
    assert when(web["status"]["beginRefreshAt"]) == when(web["status"]["notAfter"]) - timedelta(minutes=90)
    assert when(api["status"]["beginRefreshAt"]) == when(api["status"]["notBefore"]) + timedelta(hours=2)
    normal = events_of(cluster, namespace, web_name, "Normal")
    assert normal and normal[0].reason == "Issued", normal
    assert format(leaf_of(web).serial_number, "x") in normal[0].message, "the audit trail names the serial"

    # A real mutual-TLS handshake (Python's ssl, the system OpenSSL): web serves with its pod certificate
    # and the kubelet's key; api is the client; each trusts the issuer's CA and sees the other's SPIFFE ID.
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(secret_data(cluster, namespace, "mesh-ca")["ca.crt"])
    web_chain, web_key_file = write_credentials(tmp_path, "web", web, web_key)
    api_chain, api_key_file = write_credentials(tmp_path, "api", api, api_key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(web_chain, web_key_file)
    server_ctx.load_verify_locations(ca_file)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    listener = socket.create_server(("127.0.0.1", 0))
    seen_by_server: list[str] = []

    def serve() -> None:
        raw, _ = listener.accept()
        with server_ctx.wrap_socket(raw, server_side=True) as tls:
            der = tls.getpeercert(binary_form=True)
            assert der is not None
            seen_by_server.extend(spiffe_ids(x509.load_der_x509_certificate(der)))
            tls.sendall(tls.recv(100))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.check_hostname = False  # SPIFFE: the peer is checked by its URI, below
    client_ctx.load_verify_locations(ca_file)
    client_ctx.load_cert_chain(api_chain, api_key_file)
    with (
        socket.create_connection(("127.0.0.1", listener.getsockname()[1]), timeout=5) as raw,
        client_ctx.wrap_socket(raw) as tls,
    ):
        tls.sendall(b"hello")
        assert tls.recv(100) == b"hello"
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        assert spiffe_ids(x509.load_der_x509_certificate(der)) == [
            SPIFFE.format(namespace=namespace, account="web")
        ]
    thread.join(timeout=10)
    listener.close()
    assert seen_by_server == [SPIFFE.format(namespace=namespace, account="api")]


def test_requests_the_issuer_refuses_are_denied_with_a_reason(
    operator: Any, cluster: Any, namespace: str, kubelet: KubeletIdentity
) -> None:
    create_issuer(
        cluster, namespace, "mesh", {**self_signed("mesh"), "podCertificates": {}, "policy": MESH_POLICY}
    )
    wait_issuer_ready(cluster, namespace, "mesh")
    signer = f"mtls.dev/{namespace}.mesh"
    for account in ("web", "intruder"):
        service_account(cluster, namespace, account)
    intruder = kubelet.bind_pod(namespace, "intruder-0", "intruder")
    web = kubelet.bind_pod(namespace, "web-0", "web")
    cases = {
        "an account the policy does not allow": (
            kubelet.request(intruder, signer)[0],
            "PolicyDenied",
            SPIFFE.format(namespace=namespace, account="intruder"),
        ),
        "a key type the policy does not allow": (
            kubelet.request(web, signer, key=new_key("ED25519"))[0],
            "UnsupportedKeyType",
            "keyType ECDSAP256 or ECDSAP384 or ECDSAP521",
        ),
        "a user annotation the signer does not know": (
            kubelet.request(web, signer, user_annotations={"example.com/flavour": "spicy"})[0],
            "InvalidUnverifiedUserAnnotations",
            "example.com/flavour",
        ),
    }
    for what, (name, reason, named) in cases.items():
        request = wait_answered(cluster, namespace, name)
        status = request["status"]
        (denied,) = status["conditions"]
        assert (denied["type"], denied["reason"]) == ("Denied", reason), (what, denied)
        assert named in denied["message"], (what, denied["message"])
        assert "certificateChain" not in status, what
        warnings = events_of(cluster, namespace, name, "Warning")
        assert warnings and warnings[0].reason == reason, (what, warnings)


def test_a_service_account_re_created_after_the_request_is_a_pod_mismatch(
    operator: Any, cluster: Any, namespace: str, kubelet: KubeletIdentity
) -> None:
    """The request waits for its signer; meanwhile the ServiceAccount is deleted and created again under
    the same name: the UID in the request no longer is the one the API records."""
    service_account(cluster, namespace, "web")
    pod = kubelet.bind_pod(namespace, "web-0", "web")
    signer = f"mtls.dev/{namespace}.late"
    name, _ = kubelet.request(pod, signer)
    cluster.core.delete_namespaced_service_account("web", namespace)
    service_account(cluster, namespace, "web")
    policy = {"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"]}
    create_issuer(
        cluster, namespace, "late", {**self_signed("late"), "podCertificates": {}, "policy": policy}
    )
    request = wait_answered(cluster, namespace, name)
    (denied,) = request["status"]["conditions"]
    assert (denied["type"], denied["reason"]) == ("Denied", "PodMismatch"), denied
    assert "re-created" in denied["message"], denied["message"]


# ---------------------------------------------------------------------------------------------------------
# MTLSClusterIssuer


@pytest.fixture
def mesh_namespaces(cluster: Any) -> Iterator[list[str]]:
    suffix = uuid.uuid4().hex[:6]
    names = [f"t-pc-a-{suffix}", f"t-pc-c-{suffix}"]
    for name, labels in zip(names, ({"mesh": "on"}, {}), strict=True):
        cluster.core.create_namespace(
            client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels))
        )
    yield names
    for name in names:
        cluster.core.delete_namespace(name)


@pytest.fixture
def cluster_issuers(cluster: Any) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        try:
            cluster.custom.delete_cluster_custom_object("mtls.dev", "v1alpha1", "mtlsclusterissuers", name)
        except ApiException as error:
            if error.status != 404:
                raise


def create_cluster_issuer(cluster: Any, names: list[str], name: str, spec: dict[str, Any]) -> None:
    body = {
        "apiVersion": "mtls.dev/v1alpha1",
        "kind": "MTLSClusterIssuer",
        "metadata": {"name": name},
        "spec": spec,
    }
    cluster.custom.create_cluster_custom_object("mtls.dev", "v1alpha1", "mtlsclusterissuers", body)
    names.append(name)


def test_an_ml_dsa_cluster_issuer_signs_for_the_namespaces_it_admits_and_a_second_claim_fails(
    operator: Any,
    cluster: Any,
    mesh_namespaces: list[str],
    cluster_issuers: list[str],
    kubelet: KubeletIdentity,
    tmp_path: Path,
) -> None:
    admitted, refused = mesh_namespaces
    issuer = f"t-pcmesh-{uuid.uuid4().hex[:6]}"
    create_cluster_issuer(
        cluster,
        cluster_issuers,
        issuer,
        {
            **self_signed(issuer, "MLDSA", 65),
            "clusterTrustBundle": True,
            "podCertificates": {},
            "policy": {
                "allowedNamespaces": {"matchLabels": {"mesh": "on"}},
                "allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"],
            },
        },
    )
    signer = f"mtls.dev/{issuer}"
    pods = {ns: kubelet.bind_pod(ns, "app-0") for ns in (admitted, refused)}
    issued_name, key = kubelet.request(pods[admitted], signer)
    refused_name, _ = kubelet.request(pods[refused], signer)
    issued = wait_answered(cluster, admitted, issued_name, timeout=90)
    assert issued["status"]["conditions"][0]["reason"] == "Issued", issued["status"]
    leaf = leaf_of(issued)
    assert spiffe_ids(leaf) == [SPIFFE.format(namespace=admitted, account="default")]
    assert leaf.signature_algorithm_oid.dotted_string == "2.16.840.1.101.3.4.3.18", "signed with ML-DSA-65"
    denied = wait_answered(cluster, refused, refused_name)["status"]["conditions"][0]
    assert (denied["type"], denied["reason"]) == ("Denied", "PolicyDenied"), denied
    assert "allowedNamespaces" in denied["message"]

    # The pod's trust comes from the ClusterTrustBundle the issuer publishes; a handshake over the
    # ML-DSA chain (pyOpenSSL on cryptography's OpenSSL): the pod serves, the same pod identity calls.
    certificates = client.CertificatesV1beta1Api(cluster.api_client)
    bundle = wait_for(
        lambda: certificates.read_cluster_trust_bundle(f"mtls.dev:{issuer}:anchors"),
        timeout=60,
        message="the ClusterTrustBundle",
        ignore=(ApiException,),
    )
    assert bundle.spec.signer_name == signer
    trust = tmp_path / "trust.pem"
    trust.write_text(bundle.spec.trust_bundle)
    chain, key_file = write_credentials(tmp_path, "app", issued, key)
    server = EchoServer(chain, key_file, trust).start()
    try:
        shake = client_handshake("127.0.0.1", server.port, cert=chain, key=key_file, ca=trust)
        assert shake.ok, shake.error
        assert shake.peer_signature_algorithm == "ML-DSA-65"
    finally:
        server.stop()

    # A second MTLSClusterIssuer claiming the same signer name: the signer cannot tell which is meant.
    create_cluster_issuer(
        cluster,
        cluster_issuers,
        f"{issuer}-twin",
        {**self_signed(f"{issuer}-twin"), "podCertificates": {"signerName": signer}},
    )
    wait_for(
        lambda: (
            cluster.custom.get_cluster_custom_object(
                "mtls.dev", "v1alpha1", "mtlsclusterissuers", f"{issuer}-twin"
            )
            .get("status", {})
            .get("fingerprint")
        ),
        timeout=60,
        message="the twin issuer judged",
    )
    again_pod = kubelet.bind_pod(admitted, "app-1")
    again_name, _ = kubelet.request(again_pod, signer)
    failed = wait_answered(cluster, admitted, again_name)["status"]["conditions"][0]
    assert (failed["type"], failed["reason"]) == ("Failed", "SignerConflict"), failed
    assert f"{issuer}-twin" in failed["message"] and issuer in failed["message"]
    assert read_request(cluster, admitted, again_name)["status"].get("certificateChain") is None


# ---------------------------------------------------------------------------------------------------------
# Revocation: a pod certificate carries the issuer's CRL and OCSP URLs, and is revoked by serial


def ocsp_status(url: str, leaf: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPCertStatus:
    der = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
    request = urllib.request.Request(
        url,
        data=der.public_bytes(serialization.Encoding.DER),
        headers={"Content-Type": "application/ocsp-request"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        answer = ocsp.load_der_ocsp_response(resp.read())
    assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer.certificate_status


def test_a_pod_certificate_carries_the_revocation_urls_and_is_revoked_by_serial(
    cluster: Any, crds: Any, own_namespace: str, tmp_path: Path
) -> None:
    """Its own operator (the shared one serves no CRL/OCSP), watching the namespace by a glob so that it
    watches PodCertificateRequests; `mtlsctl revoke --serial` as an admin would run it."""
    namespace = own_namespace
    port = free_port()
    proc = OperatorProcess(
        cluster.kubeconfig,
        tmp_path / "operator.log",
        "--namespace",
        f"{namespace}*",
        env={"MTLS_REVOCATION_PORT": str(port), "MTLS_REVOCATION_BIND": "127.0.0.1"},
    ).start()
    kubelet = KubeletIdentity.create(cluster)
    try:
        base = f"http://127.0.0.1:{port}"
        urls = {"crlURL": f"{base}/crl/{namespace}/mesh.crl", "ocspURL": f"{base}/ocsp/{namespace}/mesh"}
        policy = {"allowedURIs": ["spiffe://{trustDomain}/ns/{namespace}/sa/*"]}
        create_issuer(
            cluster,
            namespace,
            "mesh",
            {**self_signed("mesh"), "podCertificates": {}, "policy": policy, "revocation": urls},
        )
        wait_issuer_ready(cluster, namespace, "mesh")
        pod = kubelet.bind_pod(namespace, "web-0")
        name, _ = kubelet.request(pod, f"mtls.dev/{namespace}.mesh")
        request = wait_answered(cluster, namespace, name)
        leaf = leaf_of(request)
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        assert [n.value for p in points for n in p.full_name or []] == [urls["crlURL"]]
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        assert [a.access_location.value for a in access] == [urls["ocspURL"]]
        ca = x509.load_pem_x509_certificate(secret_data(cluster, namespace, "mesh-ca")["tls.crt"])
        assert ocsp_status(urls["ocspURL"], leaf, ca) is ocsp.OCSPCertStatus.GOOD

        serial = format(leaf.serial_number, "x")
        revoked = subprocess.run(
            [
                sys.executable,
                "-m",
                "mtls_operator.cli.main",
                "revoke",
                "--serial",
                serial,
                "--issuer",
                "mesh",
                "-n",
                namespace,
                "--reason",
                "keyCompromise",
                "--not-after",
                request["status"]["notAfter"],
                "--kubeconfig",
                str(cluster.kubeconfig),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        assert f"Revoked serial {serial} of MTLSIssuer {namespace}/mesh" in revoked.stdout

        # The operator reads the list at once (the issuer was touched): OCSP says revoked, the CRL lists it.
        wait_for(
            lambda: ocsp_status(urls["ocspURL"], leaf, ca) is ocsp.OCSPCertStatus.REVOKED,
            timeout=60,
            message="OCSP answers revoked",
        )

        def on_crl() -> bool:
            found = cluster.core.read_namespaced_config_map("mesh-revocations", namespace)
            crl = x509.load_pem_x509_crl(found.data["ca.crl"].encode())
            return crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None

        wait_for(on_crl, timeout=60, message="the serial on the issuer's CRL")
        with urllib.request.urlopen(urls["crlURL"], timeout=10) as resp:
            served = x509.load_der_x509_crl(resp.read())
        entry = served.get_revoked_certificate_by_serial_number(leaf.serial_number)
        assert entry is not None and served.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    finally:
        kubelet.close()
        proc.stop()
