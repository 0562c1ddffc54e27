"""PodCertificateRequests made the way a kubelet makes them, for the tests of the Pod Certificate signer.

:class:`KubeletIdentity` creates a Node object and acts as that node (``system:node:<name>`` in group
``system:nodes``), so the API server's Node authorizer and NodeRestriction admission judge its requests
exactly as a real kubelet's: it may create a request only for a pod bound to it, naming the pod's
ServiceAccount and the UIDs the API records. The pods need not run (no kubelet serves the node); they
tolerate the node's unreachable taint so that nothing evicts them while a test runs.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from kubernetes import client
from kubernetes.client.rest import ApiException

from helpers import wait_for

GROUP, VERSION, PLURAL = "certificates.k8s.io", "v1beta1", "podcertificaterequests"
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


def new_key(key_type: str = "ECDSAP256") -> PrivateKey:
    """A key of one of the kubelet's key types (the projection's keyType)."""
    if key_type == "ED25519":
        return ed25519.Ed25519PrivateKey.generate()
    if key_type.startswith("RSA"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(key_type[3:]))
    curves = {"ECDSAP256": ec.SECP256R1, "ECDSAP384": ec.SECP384R1, "ECDSAP521": ec.SECP521R1}
    return ec.generate_private_key(curves[key_type]())


def stub_csr(key: PrivateKey) -> bytes:
    """An empty PKCS#10 request signed by ``key``, DER: what a kubelet sends (stubPKCS10Request)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    digest = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, digest).public_bytes(serialization.Encoding.DER)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclass
class KubeletIdentity:
    """A Node object and a client acting as its kubelet."""

    cluster: Any
    name: str
    uid: str
    api_client: Any
    pods: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def create(cls, cluster: Any, prefix: str = "t-pcr-node") -> KubeletIdentity:
        name = f"{prefix}-{uuid.uuid4().hex[:6]}"
        node = cluster.core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name)))
        api_client = cluster.impersonate(f"system:node:{name}")
        api_client.set_default_header("Impersonate-Group", "system:nodes")
        return cls(cluster, name, node.metadata.uid, api_client)

    def close(self) -> None:
        self.api_client.close()
        for namespace, pod in self.pods:
            try:
                self.cluster.core.delete_namespaced_pod(pod, namespace, grace_period_seconds=0)
            except ApiException as error:
                if error.status != 404:
                    raise
        try:
            self.cluster.core.delete_node(self.name)
        except ApiException as error:
            if error.status != 404:
                raise

    def bind_pod(self, namespace: str, name: str, service_account: str = "default") -> client.V1Pod:
        """A pod bound to this node (spec.nodeName: the scheduler is not involved), running as
        ``service_account``, which must exist."""
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name),
            spec=client.V1PodSpec(
                node_name=self.name,
                service_account_name=service_account,
                automount_service_account_token=False,
                containers=[client.V1Container(name="app", image="registry.invalid/app:1")],
                tolerations=[
                    client.V1Toleration(key=f"node.kubernetes.io/{taint}", operator="Exists")
                    for taint in ("unreachable", "not-ready")
                ],
            ),
        )
        created: client.V1Pod = self.cluster.core.create_namespaced_pod(namespace, pod)
        self.pods.append((namespace, name))
        return created

    def request(
        self,
        pod: client.V1Pod,
        signer: str,
        *,
        key: PrivateKey | None = None,
        max_expiration: int | None = 3600,
        user_annotations: dict[str, str] | None = None,
    ) -> tuple[str, PrivateKey]:
        """Create a PodCertificateRequest for ``pod`` as this node's kubelet; return its name and key."""
        key = key or new_key()
        namespace = pod.metadata.namespace
        account = self.cluster.core.read_namespaced_service_account(pod.spec.service_account_name, namespace)
        spec: dict[str, Any] = {
            "signerName": signer,
            "podName": pod.metadata.name,
            "podUID": pod.metadata.uid,
            "serviceAccountName": account.metadata.name,
            "serviceAccountUID": account.metadata.uid,
            "nodeName": self.name,
            "nodeUID": self.uid,
            "stubPKCS10Request": base64.b64encode(stub_csr(key)).decode(),
        }
        if max_expiration is not None:
            spec["maxExpirationSeconds"] = max_expiration
        if user_annotations:
            spec["unverifiedUserAnnotations"] = user_annotations
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "PodCertificateRequest",
            "metadata": {
                "generateName": "req-",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Pod", "name": pod.metadata.name, "uid": pod.metadata.uid}
                ],
            },
            "spec": spec,
        }
        created = client.CustomObjectsApi(self.api_client).create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, body
        )
        return str(created["metadata"]["name"]), key


def read_request(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return found


def answer(request: dict[str, Any]) -> dict[str, Any] | None:
    """The terminal condition (Issued, Denied or Failed) of a request, if it has one."""
    for found in (request.get("status") or {}).get("conditions") or ():
        if found.get("type") in ("Issued", "Denied", "Failed") and found.get("status") == "True":
            return dict(found)
    return None


def wait_answered(cluster: Any, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
    """The request once it carries a terminal condition."""
    return wait_for(
        lambda: (found := read_request(cluster, namespace, name)) and answer(found) and found,
        timeout=timeout,
        interval=0.3,
        message=f"PodCertificateRequest {namespace}/{name} answered",
    )
