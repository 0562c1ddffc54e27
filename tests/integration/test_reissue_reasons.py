"""Re-issue reasons that only a change through the API (or to the Secret) brings: the certificate's usages,
its key spec or another field of its spec changed, or a keystore went missing. Each is re-issued once,
for the reason the check names, into a whole Secret that reflects the change, at the price of one
issuance: what the API server's audit log recorded of the operator's writes about that certificate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from kubernetes import client

from api_audit import REISSUE_WRITES, kinds, per_certificate, show
from helpers import wait_for
from mtls_objects import (
    condition,
    create_certificate,
    create_issuer,
    get,
    secret_data,
    self_signed,
    wait_issuer_ready,
    wait_ready,
)
from tls_checks import key_matches_certificate

BASE: dict[str, Any] = {
    "secretName": "web-tls",
    "issuerRef": {"name": "ca"},
    "dnsNames": ["web.example"],
    "duration": "2160h",
}
PASSWORD = b"changeit"


@dataclass(frozen=True)
class Change:
    spec: dict[str, Any]  # the certificate's spec before
    apply: Callable[[Any, str], None]  # the change, through the API
    holds: Callable[[dict[str, bytes], x509.Certificate], bool]  # the re-issued Secret reflects it
    repairs: bool = False  # the change breaks the Secret, which first held what the re-issue restores


def _patch_spec(patch: dict[str, Any]) -> Callable[[Any, str], None]:
    def apply(cluster: Any, namespace: str) -> None:
        cluster.custom.patch_namespaced_custom_object(
            "mtls.dev", "v1alpha1", namespace, "mtlscertificates", "web", {"spec": patch}
        )

    return apply


def _drop_keystore(cluster: Any, namespace: str) -> None:
    cluster.core.patch_namespaced_secret("web-tls", namespace, {"data": {"keystore.p12": None}})


def _eku(leaf: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def _keystore_opens(data: dict[str, bytes], leaf: x509.Certificate) -> bool:
    if "keystore.p12" not in data:
        return False
    store = pkcs12.load_pkcs12(data["keystore.p12"], PASSWORD)
    return store.cert is not None and store.cert.certificate == leaf


KEYSTORES = {"pkcs12": {"create": True, "passwordSecretRef": {"name": "p12-pass", "key": "password"}}}
CHANGES = [
    pytest.param(
        Change(
            BASE,
            _patch_spec({"usages": ["server auth"]}),
            lambda _data, leaf: _eku(leaf) == {ExtendedKeyUsageOID.SERVER_AUTH},
        ),
        "UsagesMismatch",
        id="re-issues for UsagesMismatch when the usages change",
    ),
    pytest.param(
        Change(
            BASE,
            _patch_spec({"privateKey": {"algorithm": "Ed25519"}}),
            lambda _data, leaf: isinstance(leaf.public_key(), ed25519.Ed25519PublicKey),
        ),
        "KeySpecChanged",
        id="re-issues for KeySpecChanged when the key algorithm changes",
    ),
    pytest.param(
        Change(
            {**BASE, "privateKey": {"algorithm": "ECDSA", "size": 256}},
            _patch_spec({"privateKey": {"algorithm": "ECDSA", "size": 384}}),
            lambda _data, leaf: isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
            and leaf.public_key().curve.name == "secp384r1",
        ),
        "KeySpecChanged",
        id="re-issues for KeySpecChanged when the key size changes",
    ),
    pytest.param(
        Change(
            BASE,
            _patch_spec({"duration": "720h"}),
            lambda _data, leaf: (leaf.not_valid_after_utc - leaf.not_valid_before_utc).days == 30,
        ),
        "SpecChanged",
        id="re-issues for SpecChanged when the duration changes",
    ),
    pytest.param(
        Change({**BASE, "privateKey": {"algorithm": "ECDSA", "size": 256}, "keystores": KEYSTORES},
               _drop_keystore, _keystore_opens, repairs=True),
        "KeystoreMissing",
        id="re-issues for KeystoreMissing when keystore.p12 is removed from the Secret",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("change", "reason"), CHANGES)
def test_a_change_through_the_api_reissues_for_its_reason(
    operator: Any, cluster: Any, namespace: str, change: Change, reason: str
) -> None:
    create_issuer(cluster, namespace, "ca", self_signed("ca"))
    cluster.core.create_namespaced_secret(
        namespace,
        client.V1Secret(metadata=client.V1ObjectMeta(name="p12-pass"), string_data={"password": "changeit"}),
    )
    wait_issuer_ready(cluster, namespace, "ca")
    start = cluster.audit.mark()
    create_certificate(cluster, namespace, "web", change.spec)
    before = wait_ready(cluster, namespace, "web")["status"]
    # The first issuance does not already hold a spec change (a repair: it holds what is then broken).
    data = secret_data(cluster, namespace, "web-tls")
    assert change.holds(data, x509.load_pem_x509_certificates(data["tls.crt"])[0]) == change.repairs

    def issued_events() -> int:
        writes = operator.writes(since=start, namespace=namespace)
        return sum(1 for w in writes if w.about == ("MTLSCertificate", "web"))

    wait_for(lambda: issued_events() == 1, timeout=10, message="the first issuance's Event in the audit log")
    mark = cluster.audit.mark()
    change.apply(cluster, namespace)

    def reissued() -> dict[str, Any] | None:
        obj = get(cluster, namespace, "mtlscertificates", "web")
        issuing, ready = condition(obj, "Issuing"), condition(obj)
        revised = obj["status"].get("revision", 0) > before["revision"]
        done = revised and issuing is not None and ready is not None and ready["status"] == "True"
        return obj if done else None

    after = wait_for(reissued, timeout=30, message=f"the re-issue for {reason}")
    issuing = condition(after, "Issuing")
    assert issuing is not None and issuing["reason"] == reason, issuing
    assert after["status"]["revision"] == before["revision"] + 1
    data = secret_data(cluster, namespace, "web-tls")
    leaf = x509.load_pem_x509_certificates(data["tls.crt"])[0]
    assert format(leaf.serial_number, "x") == after["status"]["serialNumber"] != before["serialNumber"]
    assert key_matches_certificate(data["tls.crt"], data["tls.key"])
    assert x509.load_pem_x509_certificates(data["ca.crt"]) == [
        x509.load_pem_x509_certificate(secret_data(cluster, namespace, "ca-ca")["tls.crt"])
    ]
    assert change.holds(data, leaf), f"the re-issued certificate does not reflect the change for {reason}"

    # One issuance's writes, from the audit log: nothing more about this certificate.
    def writes() -> list[Any] | None:
        found = per_certificate(operator.writes(since=mark, namespace=namespace), {"web": "web-tls"})["web"]
        return found if kinds(found)["create events"] >= 1 else None

    found = wait_for(writes, timeout=10, message="the re-issue's Event in the audit log")
    assert kinds(found) == REISSUE_WRITES, show(found)
    events = cluster.core.list_namespaced_event(namespace, field_selector="involvedObject.name=web").items
    assert sorted(e.reason for e in events if e.reason == "Issued") == ["Issued", "Issued"]
    print(f"{reason}: {len(found)} writes ({dict(kinds(found))})")
