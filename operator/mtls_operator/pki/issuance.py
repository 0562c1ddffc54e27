"""One call that turns a spec and a CA into the complete data of a ``kubernetes.io/tls`` Secret; and one
that certifies a public key someone else holds (a PodCertificateRequest's: the kubelet keeps the key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from mtls_operator.api.constants import CA_CRT, KEYSTORE_P12, TLS_CRT, TLS_KEY, TRUSTSTORE_P12
from mtls_operator.api.models import CertificateSpec, KeyAlgorithm
from mtls_operator.api.tls import CertFacts, SecretFacts, TLSMaterialError
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import cert_facts, chain_pem, sign_leaf
from mtls_operator.pki.extensions import revocation_extensions
from mtls_operator.pki.keys import (
    PublicKey,
    UnsupportedKeyError,
    generate_private_key,
    key_algorithm_of,
    load_private_key_pem,
    private_key_to_pem,
)
from mtls_operator.pki.material import inspect_tls_secret
from mtls_operator.pki.pkcs12 import build_pkcs12


@dataclass(frozen=True, slots=True)
class IssuedMaterial:
    data: dict[str, bytes]
    facts: SecretFacts


def issue_tls_material(
    spec: CertificateSpec,
    ca: CAKeyPair,
    now: datetime,
    *,
    existing_key_pem: bytes | None = None,
    pkcs12_password: bytes | None = None,
    friendly_name: str = "",
    crl_url: str | None = None,
    ocsp_url: str | None = None,
    trust_anchors_pem: bytes | None = None,
) -> IssuedMaterial:
    """Make (or reuse) the key, sign the leaf, and assemble tls.crt, tls.key, ca.crt (and keystores).

    Runs in a worker thread: key generation and signing are CPU work.
    """
    key = (
        load_private_key_pem(existing_key_pem) if existing_key_pem else generate_private_key(spec.private_key)
    )
    extensions = revocation_extensions(crl_url, ocsp_url) if (crl_url or ocsp_url) else []
    cert = sign_leaf(spec, key.public_key(), ca, now, extensions=extensions)
    data = {
        TLS_CRT: chain_pem(cert, ca),
        TLS_KEY: private_key_to_pem(key, spec.private_key.encoding),
        # During a CA rotation ca.crt carries every trusted root (old and new), else the issuer's root.
        CA_CRT: trust_anchors_pem or ca.root_pem,
    }
    if spec.pkcs12.create:
        keystore, truststore = build_pkcs12(
            key, data[TLS_CRT], ca.root_pem, pkcs12_password or b"", friendly_name.encode()
        )
        data[KEYSTORE_P12] = keystore
        data[TRUSTSTORE_P12] = truststore
    return IssuedMaterial(data=data, facts=inspect_tls_secret(data, ca))


# ---------------------------------------------------------------------------------------------------------
# A public key someone else holds: PodCertificateRequests (KEP-4317)


@dataclass(frozen=True, slots=True)
class IssuedForKey:
    """A certificate issued for a requester's public key: the chain (leaf, then the CA and its
    intermediates, root excluded) and what the leaf says."""

    chain_pem: bytes
    leaf: CertFacts


def requested_public_key(stub_pkcs10: bytes, pkix_public_key: bytes) -> PublicKey:
    """The public key a PodCertificateRequest asks to certify: the subject key of its stub PKCS#10 request
    (what kubelets send), else its deprecated ``pkixPublicKey``. kube-apiserver verified the CSR's
    signature (or the proof of possession) at creation and the spec is immutable, so only the key is
    taken; the CSR's subject and extensions are ignored (kubelets send empty ones).

    Raises :class:`UnsupportedKeyError` for a key of a kind the operator cannot certify and
    :class:`TLSMaterialError` for bytes that are not a CSR or key; messages never contain the bytes."""
    if not stub_pkcs10 and not pkix_public_key:
        raise TLSMaterialError("The request carries neither stubPKCS10Request nor pkixPublicKey.")
    name = "The request's stubPKCS10Request" if stub_pkcs10 else "The request's pkixPublicKey"
    key: PublicKeyTypes
    try:
        if stub_pkcs10:
            key = x509.load_der_x509_csr(stub_pkcs10).public_key()
        else:
            key = serialization.load_der_public_key(pkix_public_key)
    except UnsupportedAlgorithm:
        raise UnsupportedKeyError(
            f"{name} holds a key of an algorithm the operator cannot certify."
        ) from None
    except ValueError:
        raise TLSMaterialError(f"{name} is not readable DER.") from None
    key_algorithm_of(key, name=f"{name}'s key")  # refuses DH, DSA, X25519, other curves...
    return cast(PublicKey, key)  # key_algorithm_of accepted it: one of PublicKey's types


def requested_key_algorithm(stub_pkcs10: bytes, pkix_public_key: bytes) -> tuple[KeyAlgorithm, int]:
    """The algorithm and size (as :class:`KeySpec` counts them) of the key a request asks to certify."""
    return key_algorithm_of(requested_public_key(stub_pkcs10, pkix_public_key))


def issue_for_public_key(
    spec: CertificateSpec,
    stub_pkcs10: bytes,
    pkix_public_key: bytes,
    ca: CAKeyPair,
    not_before: datetime,
    *,
    crl_url: str | None = None,
    ocsp_url: str | None = None,
) -> IssuedForKey:
    """Sign the leaf ``spec`` describes for the request's public key (see :func:`requested_public_key`),
    valid from ``not_before`` for ``spec.duration`` (cut short at the CA's notAfter, as every leaf), with
    the issuer's CRL and OCSP URLs. The operator never sees the private key.

    Runs in a worker thread: signing is CPU work (ML-DSA CAs especially)."""
    public_key = requested_public_key(stub_pkcs10, pkix_public_key)
    extensions = revocation_extensions(crl_url, ocsp_url) if (crl_url or ocsp_url) else []
    cert = sign_leaf(spec, public_key, ca, not_before, extensions=extensions)
    return IssuedForKey(chain_pem(cert, ca), cert_facts(cert, [ca.certificate], name="The pod certificate"))
