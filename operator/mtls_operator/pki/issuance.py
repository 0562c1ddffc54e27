"""One call that turns a spec and a CA into the complete data of a ``kubernetes.io/tls`` Secret."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from mtls_operator.api.constants import CA_CRT, KEYSTORE_P12, TLS_CRT, TLS_KEY, TRUSTSTORE_P12
from mtls_operator.api.models import CertificateSpec
from mtls_operator.api.tls import SecretFacts
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import chain_pem, sign_leaf
from mtls_operator.pki.extensions import revocation_extensions
from mtls_operator.pki.keys import generate_private_key, load_private_key_pem, private_key_to_pem
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
