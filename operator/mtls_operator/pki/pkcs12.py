"""PKCS#12 keystores for Java and other consumers that cannot read PEM.

``keystore.p12`` holds the private key, the leaf and its intermediates; ``truststore.p12`` holds the root
as a Java trusted-certificate entry. Both use modern encryption (PBES2 with AES-256-CBC, PBKDF2 with
50,000 rounds, HMAC-SHA256 MAC), which Java 11.0.12+/17+ and OpenSSL 1.1.1+ read.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mldsa
from cryptography.hazmat.primitives.serialization import KeySerializationEncryption, PrivateFormat, pkcs12

from mtls_operator.api.constants import Reason
from mtls_operator.api.tls import TLSMaterialError
from mtls_operator.pki.certs import parse_certificate_pem
from mtls_operator.pki.keys import PrivateKey

KDF_ROUNDS = 50_000
TRUSTSTORE_ALIAS = b"ca"


def build_pkcs12(
    key: PrivateKey,
    chain_pem: bytes,
    root_pem: bytes,
    password: bytes,
    friendly_name: bytes,
) -> tuple[bytes, bytes]:
    """(keystore.p12, truststore.p12) for ``key`` with ``chain_pem`` (leaf first, then intermediates)
    and the trust anchor in ``root_pem``, both encrypted with ``password``.

    Raises :class:`TLSMaterialError` (reason ``INVALID_SPEC``) for ML-DSA keys, which PKCS#12 readers do
    not support yet, and for an empty password.
    """
    if isinstance(key, mldsa.MLDSA44PrivateKey | mldsa.MLDSA65PrivateKey | mldsa.MLDSA87PrivateKey):
        raise TLSMaterialError(
            "A PKCS#12 keystore cannot hold an ML-DSA key: PKCS#12 readers (Java, OpenSSL 3.0) do not "
            "support it yet. Remove keystores.pkcs12 or use a classical key.",
            Reason.INVALID_SPEC,
        )
    if not password:
        raise TLSMaterialError(
            "The PKCS#12 password is empty: set spec.keystores.pkcs12.passwordSecretRef to a Secret key "
            "that holds a non-empty password.",
            Reason.INVALID_SPEC,
        )
    chain = parse_certificate_pem(chain_pem, name="The certificate chain for the keystore")
    roots = parse_certificate_pem(root_pem, name="The root certificate for the truststore")
    encryption = _encryption(password)
    keystore = pkcs12.serialize_key_and_certificates(friendly_name, key, chain[0], chain[1:], encryption)
    truststore = pkcs12.serialize_java_truststore(
        [
            pkcs12.PKCS12Certificate(root, TRUSTSTORE_ALIAS if i == 0 else b"ca-%d" % i)
            for i, root in enumerate(roots)
        ],
        encryption,
    )
    return keystore, truststore


def _encryption(password: bytes) -> KeySerializationEncryption:
    return (
        PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(KDF_ROUNDS)
        .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
        .hmac_hash(hashes.SHA256())
        .build(password)
    )
