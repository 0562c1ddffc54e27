"""One call that turns a spec and a CA into the complete data of a ``kubernetes.io/tls`` Secret; and one
that certifies a public key someone else holds (a PodCertificateRequest's: the kubelet keeps the key)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from mtls_operator.api.constants import (
    CA_CRT,
    KEYSTORE_P12,
    TLS_CRT,
    TLS_KEY,
    TRUSTSTORE_P12,
    Reason,
    additional_secret_keys,
)
from mtls_operator.api.models import CertificateSpec, KeyAlgorithm
from mtls_operator.api.tls import CAError, CertFacts, SecretFacts, TLSMaterialError
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
    existing_additional_keys: Mapping[KeyAlgorithm, bytes] | None = None,
) -> IssuedMaterial:
    """Make (or reuse) the keys, sign the leaves, and assemble tls.crt, tls.key, ca.crt (and keystores), plus
    tls-<algorithm>.crt/.key for each of ``spec.additional_private_keys``.

    The additional leaves carry the same names, usages and validity as the main one (their notAfter is
    the earliest any of the signing CAs allows, for all of them), each signed by the issuer's CA of its
    algorithm (:meth:`CAKeyPair.for_algorithm`); an issuer without one raises :class:`CAError` with reason
    ``AdditionalKeyUnsupported``. They carry no CRL or OCSP pointers: the issuer's revocation list is
    signed by its main CA. ``existing_additional_keys`` are reused (rotationPolicy Never).

    Runs in a worker thread: key generation and signing are CPU work.
    """
    signers = [(key, _signer(ca, key.algorithm)) for key in spec.additional_private_keys]
    limit = min(
        [ca.certificate.not_valid_after_utc, *(s.certificate.not_valid_after_utc for _, s in signers)]
    )
    key = (
        load_private_key_pem(existing_key_pem) if existing_key_pem else generate_private_key(spec.private_key)
    )
    extensions = revocation_extensions(crl_url, ocsp_url) if (crl_url or ocsp_url) else []
    cert = sign_leaf(spec, key.public_key(), ca, now, extensions=extensions, not_after_limit=limit)
    data = {
        TLS_CRT: chain_pem(cert, ca),
        TLS_KEY: private_key_to_pem(key, spec.private_key.encoding),
        # During a CA rotation ca.crt carries every trusted root (old and new), else the issuer's roots.
        CA_CRT: trust_anchors_pem or b"".join(c.root_pem for c in (ca, *ca.additional)),
    }
    reuse = existing_additional_keys or {}
    for extra, signer in signers:
        crt_name, key_name = additional_secret_keys(extra.algorithm)
        existing = reuse.get(extra.algorithm)
        extra_key = load_private_key_pem(existing, name=key_name) if existing else generate_private_key(extra)
        extra_cert = sign_leaf(spec, extra_key.public_key(), signer, now, not_after_limit=limit)
        data[crt_name] = chain_pem(extra_cert, signer)
        data[key_name] = private_key_to_pem(extra_key, extra.encoding)
    if spec.pkcs12.create:
        keystore, truststore = build_pkcs12(
            key, data[TLS_CRT], ca.root_pem, pkcs12_password or b"", friendly_name.encode()
        )
        data[KEYSTORE_P12] = keystore
        data[TRUSTSTORE_P12] = truststore
    return IssuedMaterial(data=data, facts=inspect_tls_secret(data, ca, just_signed=True))


def _signer(ca: CAKeyPair, algorithm: KeyAlgorithm) -> CAKeyPair:
    found = ca.for_algorithm(algorithm)
    if found is None:
        have = ", ".join(sorted(str(a) for a in ca.algorithms))
        raise CAError(
            f"The issuer holds no {algorithm} CA (only {have}), so it cannot sign the additional {algorithm} "
            f"key; give the issuer an additional {algorithm} CA or remove the key from "
            "spec.additionalPrivateKeys.",
            Reason.ADDITIONAL_KEY_UNSUPPORTED,
        )
    return found


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
