"""Read a ``kubernetes.io/tls`` Secret's data into :class:`SecretFacts` for ``policy`` to judge.

The reader is total: whatever bytes a Secret holds, it returns facts or raises :class:`TLSMaterialError`
(``MISSING_DATA`` when ``tls.crt`` or ``tls.key`` is absent, ``SECRET_CORRUPT`` when something does not
parse). Everything that parses but is wrong (the key of another certificate, a leaf from another CA, a
stale ``ca.crt``, a chain without the intermediates) is a boolean in the facts, not an exception.
"""

from __future__ import annotations

from collections.abc import Mapping

from mtls_operator.api.constants import CA_CRT, KEYSTORE_P12, TLS_CRT, TLS_KEY, TRUSTSTORE_P12, Reason
from mtls_operator.api.tls import SecretFacts, TLSMaterialError
from mtls_operator.pki.ca import CAKeyPair
from mtls_operator.pki.certs import cert_facts, issued_by, parse_certificate_pem
from mtls_operator.pki.fingerprints import certificate_fingerprint
from mtls_operator.pki.keys import keys_match, load_private_key_pem

__all__ = ["inspect_tls_secret", "parse_certificate_pem"]


def inspect_tls_secret(data: Mapping[str, bytes], ca: CAKeyPair | None) -> SecretFacts:
    """The facts about a Secret's decoded ``data`` as judged against ``ca`` (None: issuer unknown, so
    nothing can be signed by it, match it or complete its chain)."""
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
    facts = cert_facts(leaf, issuer_candidates, name=f"The certificate in {TLS_CRT}")
    return SecretFacts(
        leaf=facts,
        key_matches=keys_match(key, leaf.public_key()),
        signed_by_current_ca=ca is not None and issued_by(leaf, ca.certificate),
        ca_bundle_matches=ca is not None and ca.root in bundle,
        chain_complete=ca is not None and tuple(after_leaf) == ca.issuer_chain,
        has_keystores=bool(data.get(KEYSTORE_P12)) and bool(data.get(TRUSTSTORE_P12)),
        ca_bundle_fingerprints=frozenset(certificate_fingerprint(c) for c in bundle),
    )
