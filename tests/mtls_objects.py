"""Helpers to create MTLSIssuers and MTLSCertificates and wait on them through the real API server."""

from __future__ import annotations

import base64
import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from helpers import wait_for

GROUP, VERSION = "mtls.dev", "v1alpha1"
CRD_DIR = Path(__file__).resolve().parent.parent / "crds"


def byo_ca_metadata(name: str, *issuers: str) -> Any:
    """Metadata of a bring-your-own CA Secret that lets ``issuers`` sign with it: the opt-in annotation
    its owner sets, and the label that lets the operator's filtered watch see it."""
    from kubernetes import client

    return client.V1ObjectMeta(
        name=name,
        labels={"mtls.dev/secret-role": "ca"},
        annotations={"mtls.dev/allowed-issuers": ",".join(issuers)},
    )


def create_issuer(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSIssuer",
        "metadata": {"name": name},
        "spec": spec,
    }
    result: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "mtlsissuers", body
    )
    return result


def self_signed(name: str, algorithm: str = "ECDSA", size: int | None = None, **extra: Any) -> dict[str, Any]:
    key: dict[str, Any] = {"algorithm": algorithm}
    if size is not None:
        key["size"] = size
    return {
        "selfSigned": {"secretName": f"{name}-ca", "commonName": f"{name} root", "privateKey": key, **extra}
    }


def create_certificate(cluster: Any, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "MTLSCertificate",
        "metadata": {"name": name},
        "spec": spec,
    }
    result: dict[str, Any] = cluster.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "mtlscertificates", body
    )
    return result


def get(cluster: Any, namespace: str, plural: str, name: str) -> dict[str, Any]:
    result: dict[str, Any] = cluster.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, plural, name
    )
    return result


def condition(obj: dict[str, Any], kind: str = "Ready") -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def wait_condition(
    cluster: Any,
    namespace: str,
    plural: str,
    name: str,
    status: str = "True",
    reason: str | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get(cluster, namespace, plural, name)
        cond = condition(obj)
        if cond and cond.get("status") == status and (reason is None or cond.get("reason") == reason):
            return obj
        return None

    return wait_for(
        check, timeout=timeout, message=f"{plural} {namespace}/{name} Ready={status} {reason or ''}"
    )


def wait_ready(cluster: Any, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
    return wait_condition(cluster, namespace, "mtlscertificates", name, "True", timeout=timeout)


def wait_issuer_ready(cluster: Any, namespace: str, name: str, timeout: float = 60.0) -> dict[str, Any]:
    return wait_condition(cluster, namespace, "mtlsissuers", name, "True", timeout=timeout)


def secret_data(cluster: Any, namespace: str, name: str) -> dict[str, bytes]:
    secret = cluster.core.read_namespaced_secret(name, namespace)
    return {k: base64.b64decode(v) for k, v in (secret.data or {}).items()}


def apply_crds(cluster: Any) -> None:
    """Create or replace every CRD in crds/ and wait until the server serves them."""
    import yaml
    from kubernetes.client.rest import ApiException

    names = []
    plurals: list[str] = []
    for path in sorted(CRD_DIR.glob("*.yaml")):
        body = yaml.safe_load(path.read_text())
        name = body["metadata"]["name"]
        names.append(name)
        plurals.append(body["spec"]["names"]["plural"])
        try:
            current = cluster.apiextensions.read_custom_resource_definition(name)
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            cluster.apiextensions.replace_custom_resource_definition(name, body)
        except ApiException as error:
            if error.status != 404:
                raise
            cluster.apiextensions.create_custom_resource_definition(body)

    def established() -> bool:
        for name in names:
            crd = cluster.apiextensions.read_custom_resource_definition(name)
            conds = {c.type: c.status for c in (crd.status.conditions or [])}
            if conds.get("Established") != "True":
                return False
        return True

    wait_for(established, timeout=30, message="CRDs established")

    def served() -> bool:
        """Established is not enough: for a few seconds after a CRD appears the API server answers lists
        with 429 "storage is (re)initializing", and a watch started then backs off for a long while."""
        for plural in plurals:
            try:
                cluster.custom.list_cluster_custom_object(GROUP, VERSION, plural, limit=1)
            except ApiException as error:
                if error.status == 429:
                    return False
                raise
        return True

    wait_for(served, timeout=60, message="CRDs served")


def admin_ca_pem(path_length: int | None = None) -> tuple[bytes, bytes]:
    """A CA key pair an administrator made (not the operator): certificate and key, PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "platform root")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
