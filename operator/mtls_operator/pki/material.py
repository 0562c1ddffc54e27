"""Read a ``kubernetes.io/tls`` Secret's data into :class:`SecretFacts` for ``policy`` to judge.

The reader is total: whatever bytes a Secret holds, it returns facts or raises :class:`TLSMaterialError`
(``MISSING_DATA`` when ``tls.crt`` or ``tls.key`` is absent, ``SECRET_CORRUPT`` when something does not
parse). Everything that parses but is wrong (the key of another certificate, a leaf from another CA, a
stale ``ca.crt``, a chain without the intermediates) is a boolean in the facts, not an exception.

The additional key pairs of a dual certificate (``tls-<algorithm>.crt``/``.key``) are read the same way,
each judged against the issuer's CA of its algorithm; one half of a pair without the other is
``MISSING_DATA``.
"""

from __future__ import annotations

from collections.abc import Mapping

from mtls_operator.api.constants import (
    CA_CRT,
    KEYSTORE_P12,
    TLS_CRT,
    TLS_KEY,
    TRUSTSTORE_P12,
    Reason,
    additional_secret_keys,
)
from mtls_operator.api.models import KeyAlgorithm, KeyEncoding
from mtls_operator.api.tls import AdditionalFacts, SecretFacts, TLSMaterialError
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import cert_facts, parse_certificate_pem
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.keys import keys_match, load_private_key_pem

__all__ = ["inspect_tls_secret", "parse_certificate_pem"]


def inspect_tls_secret(
    data: Mapping[str, bytes], ca: CAKeyPair | None, *, just_signed: bool = False
) -> SecretFacts:
    """The facts about a Secret's decoded ``data`` as judged against ``ca`` (None: issuer unknown, so
    nothing can be signed by it, match it or complete its chain). ``just_signed``: the caller has just
    signed the leaves with ``ca`` (and its additional CAs), whose signatures are then not verified again;
    everything else is read from ``data`` as from any Secret."""
    for key_name, what in ((TLS_CRT, "certificate"), (TLS_KEY, "private key")):
        if not data.get(key_name):
            raise TLSMaterialError(
                f"{key_name} is missing: the Secret must hold the {what} in {key_name}.", Reason.MISSING_DATA
            )
    certs = parse_certificate_pem(data[TLS_CRT], name=TLS_CRT)
    leaf, after_leaf = certs[0], certs[1:]
    key = load_private_key_pem(data[TLS_KEY], name=TLS_KEY)
    raw_bundle = data.get(CA_CRT)
    bundle = parse_certificate_pem(raw_bundle, name=CA_CRT) if raw_bundle else []

    issuer_candidates = [*([ca.certificate] if ca is not None else []), *after_leaf]
    facts = cert_facts(
        leaf,
        issuer_candidates,
        name=f"The certificate in {TLS_CRT}",
        signed_by=ca.certificate if just_signed and ca is not None else None,
    )
    return SecretFacts(
        leaf=facts,
        key_matches=keys_match(key, leaf.public_key()),
        # cert_facts tried the CA first: it verified iff the issuer it found is the CA (one check, not two).
        signed_by_current_ca=ca is not None and facts.issuer_fingerprint == ca.facts.fingerprint,
        ca_bundle_matches=ca is not None and ca.root in bundle,
        chain_complete=ca is not None and tuple(after_leaf) == ca.issuer_chain,
        has_keystores=bool(data.get(KEYSTORE_P12)) and bool(data.get(TRUSTSTORE_P12)),
        ca_bundle_fingerprints=frozenset(certificate_fingerprint(c) for c in bundle),
        additional=tuple(
            _additional(data, algorithm, ca, just_signed)
            for algorithm in KeyAlgorithm
            if _holds_pair(data, algorithm)
        ),
    )


def _holds_pair(data: Mapping[str, bytes], algorithm: KeyAlgorithm) -> bool:
    crt_name, key_name = additional_secret_keys(algorithm)
    return bool(data.get(crt_name)) or bool(data.get(key_name))


def _additional(
    data: Mapping[str, bytes], algorithm: KeyAlgorithm, ca: CAKeyPair | None, just_signed: bool
) -> AdditionalFacts:
    crt_name, key_name = additional_secret_keys(algorithm)
    for name, other in ((crt_name, key_name), (key_name, crt_name)):
        if not data.get(name):
            raise TLSMaterialError(
                f"{name} is missing: the Secret holds {other} but not the other half of the pair.",
                Reason.MISSING_DATA,
            )
    certs = parse_certificate_pem(data[crt_name], name=crt_name)
    leaf, after_leaf = certs[0], certs[1:]
    key = load_private_key_pem(data[key_name], name=key_name)
    signer = ca.for_algorithm(algorithm) if ca is not None else None
    candidates = [*([signer.certificate] if signer is not None else []), *after_leaf]
    traditional = (
        b"-----BEGIN RSA PRIVATE KEY" in data[key_name] or b"-----BEGIN EC PRIVATE KEY" in data[key_name]
    )
    facts = cert_facts(
        leaf,
        candidates,
        name=f"The certificate in {crt_name}",
        signed_by=signer.certificate if just_signed and signer is not None else None,
    )
    return AdditionalFacts(
        algorithm=algorithm,
        leaf=facts,
        key_matches=keys_match(key, leaf.public_key()),
        key_encoding=KeyEncoding.PKCS1 if traditional else KeyEncoding.PKCS8,
        signed_by_current_ca=signer is not None and facts.issuer_fingerprint == signer.facts.fingerprint,
        chain_complete=signer is not None and tuple(after_leaf) == signer.issuer_chain,
    )
